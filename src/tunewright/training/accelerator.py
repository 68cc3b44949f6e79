"""The `accelerate.Accelerator` of a run: devices, processes and mixed precision.

accelerate keeps one process-wide state and refuses a second Accelerator with other settings, so a
Python session that trains twice (a notebook, the tests, `verify`) resets it first, as transformers'
Trainer does; the distributed process group is kept.
"""

from __future__ import annotations

from tunewright.errors import ConfigError

__all__ = ["make_accelerator"]


def make_accelerator(mixed_precision: str = "fp32", cpu: bool | None = None):
    """A fresh Accelerator; `mixed_precision` as the config writes it (fp32, bf16, fp16)."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cpu = not torch.cuda.is_available() if cpu is None else cpu
    if mixed_precision == "fp16" and cpu:
        # accelerate applies neither fp16 autocast nor loss scaling on the CPU: it would train in fp32
        raise ConfigError("train.mixed_precision: fp16 needs a CUDA GPU (on the CPU it would silently train in "
                          "fp32); use bf16, which CPUs with AMX or AVX512-BF16 run fast, or fp32")
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision="no" if mixed_precision == "fp32" else mixed_precision,  # accelerate's name
                       cpu=cpu)
