"""`train.mixed_precision: auto`: the precision that fits the machine, and why it was chosen.

bf16 autocast pays only where the hardware multiplies bf16 natively: CUDA devices that report bf16
support, and CPUs with AMX or AVX512-BF16 (there a bf16 matmul runs several times faster than fp32).
Elsewhere PyTorch emulates bf16 matmuls and they run slower than fp32, so `auto` keeps fp32. An
explicit value always wins. A resumed run keeps the precision its checkpoint was trained in, since
changing it mid-run changes the numbers; where this machine cannot run that precision the resume is
refused with the reason.

The CPU check reads the kernel's flags; `TUNEWRIGHT_CPU_BF16=1` or `=0` overrides it (a machine that
misreports its flags, or a test suite that must give the same numbers on every machine).
"""

from __future__ import annotations

import os
from pathlib import Path

from tunewright.errors import ConfigError

__all__ = ["cpu_bf16", "resolve_precision"]

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
ENV = "TUNEWRIGHT_CPU_BF16"


def cpu_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """Why bf16 matmuls are fast on this CPU ("this CPU has amx_bf16"), or None when they are not."""
    forced = os.environ.get(ENV)
    if forced is not None:
        if forced not in ("0", "1"):
            raise ConfigError(f"{ENV}={forced!r}: expected 1 (the CPU has fast bf16) or 0 (it has not)")
        return f"{ENV}=1 says this CPU has fast bf16" if forced == "1" else None
    try:
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:  # not Linux, or no /proc: assume no fast bf16 (fp32 is never the slow choice)
        return None
    return next((f"this CPU has {flag}" for flag in CPU_BF16_FLAGS if flag in flags), None)


def resolve_precision(requested: str, cpu: bool, trained_in: str | None = None) -> tuple[str, str]:
    """(precision to run, why) for `train.mixed_precision: requested` on this machine; `trained_in`
    is the precision of the checkpoint being resumed, if any."""
    if requested != "auto":
        return requested, "as configured"
    if trained_in is not None:
        if trained_in == "fp16" and cpu:
            raise ConfigError("train.mixed_precision: auto: the checkpoint was trained in fp16, which needs a CUDA "
                              "GPU; resume it on one, or start a new run here")
        if trained_in == "bf16" and not cpu and not _cuda_bf16():
            raise ConfigError("train.mixed_precision: auto: the checkpoint was trained in bf16, which this GPU does "
                              "not support; resume it on a GPU with bf16 or on the CPU")
        return trained_in, "auto: the resumed checkpoint was trained in it"
    if not cpu:
        import torch
        name = torch.cuda.get_device_name()
        if _cuda_bf16():
            return "bf16", f"auto: {name} supports bf16"
        return "fp32", f"auto: {name} has no bf16"
    fast = cpu_bf16()
    if fast:
        return "bf16", f"auto: {fast}"
    return "fp32", "auto: this CPU has neither AMX nor AVX512-BF16, so bf16 would be emulated and slower than fp32"


def _cuda_bf16() -> bool:
    import torch
    return torch.cuda.is_bf16_supported()
