"""What a run records besides its losses: FLOPs per token (the stated MFU convention), the device's
peak, peak memory, and the versions and device it ran on."""

from __future__ import annotations

import platform
import resource
import time

import torch

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a substring of torch.cuda.get_device_name().
GPU_PEAKS = [("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100", 989.4e12), ("A100", 312.0e12),
             ("L40S", 362.0e12), ("A10", 125.0e12), ("4090", 165.2e12)]


def flops_per_token(n_matmul: int, n_layers: int, d_model: int, seq: float, n_trainable: int) -> float:
    """LoRA training FLOPs per token: 4*N_matmul (frozen weights: forward + input gradient, no weight
    gradient) + 12*L*d*s (attention scores and values, forward and backward) + 6*N_lora. Recompute
    under activation checkpointing is not counted (model FLOPs, not hardware FLOPs)."""
    return 4 * n_matmul + 12 * n_layers * d_model * seq + 6 * n_trainable


def matmul_params(model) -> int:
    """Parameters of the frozen base that sit in matrix multiplies (linear layers and the output head;
    embedding lookups are not matmuls). Adapters are counted apart, in N_lora."""
    from tunewright.models.load import base_model

    base = base_model(model)
    total = 0
    for name, module in base.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and "lora_" not in name and weight is not None:
            total += weight.numel()
    return total


def peak_flops(device: str, dtype: torch.dtype, threads: int | None = None) -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from). GPUs: the datasheet's dense bf16 peak. CPUs have no
    datasheet figure we can trust, so we time a large GEMM in the run's dtype on the run's threads."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        for key, peak in GPU_PEAKS:
            if key in name:
                return peak, f"datasheet dense bf16, {name}"
        return float("nan"), f"unknown GPU {name}"
    n = 2048
    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(10):  # best of 10: the peak is what the cores can do, not what a hiccup allowed
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best, f"measured {n}x{n} {str(dtype).replace('torch.', '')} GEMM on {torch.get_num_threads()} threads"


def peak_memory(device: str) -> dict:
    """Peak allocated/reserved bytes on a GPU; the process's peak resident set on a CPU."""
    if device == "cuda":
        return {"peak_allocated_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2 ** 30}
    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()} CPU"


def environment(device: str) -> dict:
    import peft
    import transformers

    env = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "python": platform.python_version()}
    try:
        import liger_kernel  # noqa: F401
        from importlib.metadata import version
        env["liger_kernel"] = version("liger-kernel")
    except ImportError:
        pass
    if device == "cuda":
        env["device"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    else:
        env["device"] = f"{_cpu_name()}, {torch.get_num_threads()} threads"
    return env
