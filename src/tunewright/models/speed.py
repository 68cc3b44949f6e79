"""Speed and memory switches of `model:` applied to a built model: kernels, selective
checkpointing, regional compilation, activation offloading.

    apply_speedups(model, cfg)   after the method is applied (LoRA layers inside blocks are
                                 patched and compiled with them), in `run.build`:
        model.liger              Liger Triton kernels for RMSNorm, RoPE and SwiGLU (CUDA only).
                                 Not its cross-entropy: our objective fuses head + loss itself.
        model.checkpoint_layers  with gradient_checkpointing, recompute only this fraction of the
                                 blocks (evenly spaced); the rest keep their activations.
        model.compile            `block.compile()` on each transformer block ("regional"
                                 compilation, torchtune's compile per layer): the compile cost is
                                 one block's graph, reused by the identical blocks, not the whole
                                 model's. `nn.Module.compile` compiles in place: the module, its
                                 parameters and state-dict names stay, so PEFT save/load and
                                 checkpoints do not change.
    forward_context(cfg)         the context the loop enters around each training forward:
        model.activation_offload saved activations go to pinned CPU memory and come back in
                                 backward (`torch.autograd.graph.save_on_cpu`). With gradient
                                 checkpointing only block inputs are saved, so this is offloaded
                                 activation checkpointing: device memory for activations drops to
                                 about one block's, at the cost of a host copy each way.

A "block" is a transformers `GradientCheckpointingLayer` (LlamaDecoderLayer, Qwen2DecoderLayer,
GPT2Block, T5Block, ...): the unit transformers checkpoints, and the one we compile.
"""

from __future__ import annotations

import importlib.util
import math
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch

from tunewright.errors import ConfigError
from tunewright.models.load import base_model

__all__ = ["apply_speedups", "forward_context", "blocks", "checkpointed_blocks"]

LIGER_KERNELS = {"rope": True, "rms_norm": True, "swiglu": True,
                 # the objective computes head + cross-entropy chunk by chunk; Liger's would replace
                 # the model's forward (fused_linear_cross_entropy) or a loss we never call
                 "cross_entropy": False, "fused_linear_cross_entropy": False}


def blocks(model) -> list[torch.nn.Module]:
    """The repeated transformer blocks, in order (encoder then decoder for encoder-decoders);
    only the outermost when such layers nest."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    found, inside = [], set()
    for name, module in base_model(model).named_modules():
        if isinstance(module, GradientCheckpointingLayer) and not any(name.startswith(p + ".") for p in inside):
            found.append(module)
            inside.add(name)
    return found


def checkpointed_blocks(model) -> list[int]:
    """Indices (into `blocks(model)`) of the blocks recomputed in backward."""
    return [i for i, b in enumerate(blocks(model)) if getattr(b, "gradient_checkpointing", False)]


def apply_speedups(model, cfg):
    """Apply `cfg`'s (a ModelConfig) speed switches to `model` in place; return it.

    Order matters: Liger rebinds module forwards and a compiled block traces whatever forward it
    finds at its first call, and the per-block checkpointing flag is read inside the compiled
    forward (changing it later would recompile). So: kernels, then checkpointing, then compile.
    """
    if cfg.activation_offload and not torch.cuda.is_available():
        raise ConfigError("model.activation_offload: needs a CUDA GPU (it moves saved activations from GPU "
                          "memory to pinned CPU memory; on a CPU they are in CPU memory already); remove it")
    if cfg.liger:
        _apply_liger(model)
    if cfg.gradient_checkpointing and cfg.checkpoint_layers < 1:
        _select_checkpointed(model, cfg.checkpoint_layers)
    if cfg.compile:
        found = blocks(model)
        if not found:
            raise ConfigError("model.compile: this architecture has no transformer blocks to compile "
                              "(no transformers GradientCheckpointingLayer); remove it")
        for block in found:
            block.compile()
    return model


def _apply_liger(model) -> None:
    """Liger's per-architecture patch on the loaded instance (its norms, MLPs; RoPE module-wide)."""
    if importlib.util.find_spec("liger_kernel") is None or not torch.cuda.is_available():
        raise ConfigError("model.liger: needs the liger-kernel package and a CUDA GPU "
                          "(pip install liger-kernel); remove it on this machine")
    from liger_kernel.transformers import _apply_liger_kernel_to_instance
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    base = base_model(model)
    model_type = getattr(base.config, "model_type", None)
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:  # Liger would only log and do nothing
        raise ConfigError(f"model.liger: liger-kernel has no kernels for model type {model_type!r} (it has "
                          f"{', '.join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))}); remove it")
    # keys an architecture's patch function does not take (e.g. swiglu for a GeGLU model) are dropped by Liger
    _apply_liger_kernel_to_instance(model=base, **LIGER_KERNELS)


def _select_checkpointed(model, fraction: float) -> None:
    """Keep checkpointing on ceil(fraction * n) evenly spaced blocks, switch it off on the others.

    transformers >= 5 gives each block its own `gradient_checkpointing` flag, set by
    `enable_checkpointing` (models/load.py) on all of them; a block with the flag off keeps its
    activations (no recompute: faster backward, more memory).
    """
    found = blocks(model)
    if not found or not any(getattr(b, "gradient_checkpointing", False) for b in found):
        raise ConfigError("model.checkpoint_layers: this architecture has no per-block checkpointing flag "
                          "(transformers GradientCheckpointingLayer); remove it")
    n = len(found)
    keep = math.ceil(fraction * n)
    chosen = {math.floor(i * n / keep) for i in range(keep)}  # 0.5 of 4 -> blocks 0 and 2
    for i, block in enumerate(found):
        block.gradient_checkpointing = i in chosen


def forward_context(cfg) -> Callable[[], ContextManager]:
    """A factory of the context entered around each training forward (not evaluation).

    `activation_offload` keeps every tensor autograd saves for backward in pinned CPU memory.
    The CUDA check is in `apply_speedups` (build time); here the context is built as asked.
    """
    if not cfg.activation_offload:
        return nullcontext

    def offload() -> ContextManager:
        # pinned host memory: the copies back to the device in backward do not block; the copies out
        # in forward do (save_on_cpu copies synchronously), which is the price of the memory saved
        return torch.autograd.graph.save_on_cpu(pin_memory=True)

    return offload
