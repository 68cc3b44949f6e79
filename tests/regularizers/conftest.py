"""Fixtures of the regularizer tests: the loop driven in-process on a real single-process CPU
accelerator."""

from __future__ import annotations

import pytest


@pytest.fixture
def accelerator():
    """A fresh single-process CPU `accelerate.Accelerator`, fp32 (another test may have left bf16 set)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=True)
