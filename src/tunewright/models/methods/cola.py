"""ColA, gradient-offloaded adapters (Diao et al. 2024, "ColA: Collaborative Adaptation with Gradient
Learning"): the adapters and their optimizer state live on the CPU; the accelerator only computes the
gradient of the hidden states they feed.

    h = W x + scale * B A x        (low-rank, r given; A [r, in], B [out, r], scale = alpha / r)
    h = W x + D x                  (linear, r null; D [out, in])

In forward, the adapted linear's input goes to the CPU, the adapter runs there (no autograd graph on
the accelerator) and its output comes back and is added to the linear's. In backward, the linear's
output gradient is shipped to the CPU with the kept input: the adapter's weight gradients are
computed there from the (input, hidden-gradient) pair, and the gradient of the input through the
adapter goes back, so the rest of the network gets exactly LoRA's gradient. The adapters are
parameters of the model and stay on the CPU in fp32 whatever the model is moved or cast to, so the
loop, its optimizer (AdamW over them, on the CPU), clipping (torch's clip_grad_norm_ takes
parameters on several devices) and the schedule treat them as any trainable parameter: nothing in
the loop changes. Written here because peft has no gradient-offloaded adapter.

Refused under DDP for now: each rank would fit its CPU adapters on its own gradients, and DDP's
all-reduce covers only the parameters on the accelerator it was given; the ranks' adapters would
drift apart (an all-reduce of the CPU gradients is not built).

Saves `cola.safetensors` and `tunewright_adapter.json`; merges like LoRA (the delta folded into W).
"""

from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tunewright.errors import ConfigError
from tunewright.models.saved import OWN_ADAPTER as SETTINGS
from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge", "CANNOT_MERGE", "FORMAT", "load_for_inference", "ColaAdapter"]

FORMAT = "COLA"
CANNOT_MERGE = None
WEIGHTS = "cola.safetensors"


class Config(Section):
    name: Literal["cola"] = Field("cola", description=(
        "Gradient-offloaded adapters (ColA): adapters and their optimizer state on the CPU, fitted there from the "
        "(input, hidden-gradient) pairs the accelerator ships back."))
    r: int | None = Field(8, gt=0, description="Rank of the low-rank adapter B @ A; null for a full linear adapter D.")
    alpha: float = Field(16, gt=0, description="Low-rank scale numerator: the update is multiplied by alpha / r.")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], description=(
        "Names of the linear layers whose output the adapters add to."))


class ColaAdapter(nn.Module):
    """x -> scale * B A x (or D x), kept on the CPU in fp32 (`_apply` is a no-op: `model.to(...)`, `.cuda()`
    and dtype casts of the model leave it where it is)."""

    def __init__(self, in_features: int, out_features: int, r: int | None, alpha: float):
        super().__init__()
        if r is None:
            self.D = nn.Parameter(torch.zeros(out_features, in_features))
        else:
            # LoRA's start (peft's default): A Kaiming-uniform, B zero: the identity until it trains
            self.A = nn.Parameter(torch.empty(r, in_features))
            self.B = nn.Parameter(torch.zeros(out_features, r))
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scale = alpha / r if r else 1.0

    def _apply(self, fn, recurse=True):
        return self

    def delta(self) -> torch.Tensor:
        """The update as one [out, in] matrix (what merging adds to W)."""
        return self.D if hasattr(self, "D") else self.scale * self.B @ self.A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "D"):
            return x @ self.D.T
        return (x @ self.A.T) @ self.B.T * self.scale


class _Offloaded(torch.autograd.Function):
    """The adapter's output on the input's device; its graph and its weights' gradients on the CPU.
    The weights are inputs of the function so that autograd calls its backward whenever they train,
    even when nothing before the adapted layer does."""

    @staticmethod
    def forward(ctx, x, adapter, *weights):
        x_cpu = x.detach().to("cpu", torch.float32)
        ctx.adapter = adapter
        ctx.save_for_backward(x_cpu)  # kept in host memory, not on the accelerator
        with torch.no_grad():
            return adapter(x_cpu).to(x.device, x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x_cpu,) = ctx.saved_tensors
        weights = list(ctx.adapter.parameters())
        x_in = x_cpu.detach().requires_grad_(ctx.needs_input_grad[0])
        wanted = ([x_in] if ctx.needs_input_grad[0] else []) + weights
        with torch.enable_grad():
            grads = list(torch.autograd.grad(ctx.adapter(x_in), wanted, grad.to("cpu", torch.float32)))
        grad_x = grads.pop(0).to(grad.device, grad.dtype) if ctx.needs_input_grad[0] else None
        return (grad_x, None, *grads)


def _add_adapter(module, args, output):
    return output + _Offloaded.apply(args[0], module.cola, *module.cola.parameters())


def _targets(model, names: list[str]) -> list[tuple[str, nn.Module]]:
    found = [(n, m) for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in names and hasattr(m, "in_features")]
    if not found:
        raise ConfigError(f"method.target_modules: none of {names} is a linear layer of this model")
    return found


def _insert(model, r: int | None, alpha: float, target_modules: list[str]) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("method.name: cola is not supported under DDP yet: each rank would fit its CPU adapters on "
                          "its own gradients (DDP all-reduces only the accelerator's parameters) and the ranks' "
                          "adapters would drift apart; train it on one process")
    for p in model.parameters():
        p.requires_grad_(False)
    for _, linear in _targets(model, target_modules):
        # on a model built on the meta device (inspect, the memory estimate) the adapters take no memory either
        with torch.device("meta") if linear.weight.is_meta else nullcontext():
            linear.add_module("cola", ColaAdapter(linear.in_features, linear.out_features, r, alpha))
        linear._cola_hook = linear.register_forward_hook(_add_adapter)
    model._tunewright_cola = {"format": FORMAT, "r": r, "alpha": alpha, "target_modules": list(target_modules),
                              "model_type": model.config.model_type,
                              "base_model_name_or_path": model.name_or_path or None}


def apply(model, cfg: Config, *, new_token_ids=()):
    """Freeze `model` and add a CPU adapter to each target linear's output; only the adapters train."""
    from tunewright.models.peft_adapters import refuse_new_tokens

    refuse_new_tokens(new_token_ids, "cola")
    _insert(model, cfg.r, cfg.alpha, cfg.target_modules)
    return model


def _adapter_state(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.state_dict().items() if ".cola." in n}


def save(model, path) -> None:
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in _adapter_state(model).items()}, str(folder / WEIGHTS))
    (folder / SETTINGS).write_text(json.dumps(model._tunewright_cola, indent=2) + "\n", encoding="utf-8")


def load(model, path) -> None:
    from tunewright.models.methods.bottleneck import load_named

    load_named(_adapter_state(model), path, WEIGHTS, "cola", "cpu")


def merge(model):
    """W += the adapter's delta in every adapted linear; the adapters and their hooks go."""
    with torch.no_grad():
        for module in list(model.modules()):
            adapter = getattr(module, "cola", None)
            if isinstance(adapter, ColaAdapter):
                module.weight += adapter.delta().to(module.weight.device, module.weight.dtype)
                module._cola_hook.remove()
                del module.cola, module._cola_hook
    return model


def load_for_inference(model, path):
    from tunewright.models.load import read_json

    settings = read_json(Path(path) / SETTINGS, "cola adapter")
    if settings.get("model_type") not in (None, model.config.model_type):
        raise ConfigError(f"adapter: {str(path)!r} was trained for a different architecture "
                          f"({settings['model_type']!r}, this model is {model.config.model_type!r})")
    try:
        _insert(model, settings["r"], float(settings["alpha"]), list(settings["target_modules"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{Path(path) / SETTINGS}: not a readable cola adapter config ({err})") from None
    model._tunewright_cola["base_model_name_or_path"] = settings.get("base_model_name_or_path")
    load(model, path)
    return model
