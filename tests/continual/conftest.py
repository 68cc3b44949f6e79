"""The continual tests' sequence (sequences.py) as a fixture."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sequences import sequence_config  # noqa: E402


@pytest.fixture
def sequence_raw(tmp_path):
    """`sequence_raw(**changes)` -> sequences.sequence_config in this test's tmp_path."""
    return lambda **changes: sequence_config(tmp_path, **changes)
