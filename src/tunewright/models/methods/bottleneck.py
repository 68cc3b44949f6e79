"""Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"; Pfeiffer
et al. 2021, "AdapterFusion"): a small residual MLP after a sublayer of every chosen block.

    h = sublayer(x)                                  attention and/or feed-forward output [.., d]
    h' = h + W_up act(W_down h + b_down) + b_up      W_down [m, d], W_up [d, m], m = d / reduction_factor

    houlsby:  after the attention and after the feed-forward sublayer of each block (2 adapters)
    pfeiffer: after the feed-forward sublayer only (1 adapter; about as good at half the parameters)

W_up and b_up start at zero, so training starts from the base model exactly. `layers: k` puts
adapters in the last k blocks only (the course: higher layers adapt to the task, lower ones hold
general features). Written here because peft 0.21 has no bottleneck adapter and AdapterHub's
`adapters` 1.3 pins transformers ~=4.57.

Each adapter is a child module `bottleneck` of its sublayer, run by a forward hook on that
sublayer (the hook reads the adapter from the module it is called with, so a deep copy of the model
runs its own copies). Saves `bottleneck.safetensors` and `tunewright_adapter.json` (the settings,
the block indices and the base); `load_for_inference` needs neither peft nor a run record.
Cannot merge: the block is non-linear, so no weight of the base can absorb it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tunewright.errors import ConfigError
from tunewright.models.saved import OWN_ADAPTER as SETTINGS
from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge", "CANNOT_MERGE", "FORMAT", "load_for_inference", "Bottleneck",
           "ACTIVATIONS", "adapter_sites", "load_named"]

FORMAT = "BOTTLENECK"  # the `format` of tunewright_adapter.json (models/saved.py)
CANNOT_MERGE = ("a bottleneck adapter is a non-linear block (down, activation, up) after a sublayer; no weight of "
                "the base model can absorb it")
WEIGHTS = "bottleneck.safetensors"

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
# sublayer names by architecture family (Llama/Qwen2/Mistral, GPT-2/BLOOM, Falcon/GPT-NeoX)
ATTENTION = ("self_attn", "attn", "attention", "self_attention")
FEED_FORWARD = ("mlp", "feed_forward", "ffn")


class Config(Section):
    name: Literal["bottleneck"] = Field("bottleneck", description="Bottleneck adapters after sublayers (Houlsby/Pfeiffer).")
    placement: Literal["houlsby", "pfeiffer"] = Field("pfeiffer", description=(
        "`houlsby`: after the attention and the feed-forward sublayer of each block; `pfeiffer`: after the "
        "feed-forward sublayer only."))
    reduction_factor: int = Field(16, gt=0, description="Bottleneck width m = hidden size / reduction_factor.")
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = Field("relu", description="Activation between down and up.")
    layers: Literal["all"] | int = Field("all", description=(
        "Blocks that get adapters: `all`, or k for the last k blocks."))


class Bottleneck(nn.Module):
    """h -> h + up(act(down(h))), up zero-initialised: the identity until it trains. h [.., d]."""

    def __init__(self, d: int, m: int, non_linearity: str):
        super().__init__()
        self.down = nn.Linear(d, m)
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(m, d)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


def _through_adapter(module, args, output):
    """Forward hook on a sublayer: its output through its `bottleneck` child. Attention returns a
    tuple (output, weights, ...): only the output is adapted."""
    if isinstance(output, tuple):
        return (module.bottleneck(output[0]), *output[1:])
    return module.bottleneck(output)


def _child(block, names, what: str, where: str):
    for name in names:
        if isinstance(getattr(block, name, None), nn.Module):
            return getattr(block, name)
    children = ", ".join(n for n, _ in block.named_children())
    raise ConfigError(f"method: bottleneck found no {what} sublayer in {where} (looked for {', '.join(names)}; "
                      f"it has {children})")


def adapter_sites(model, placement: str, layers) -> list[tuple[int, nn.Module]]:
    """(block index, sublayer) pairs an adapter goes after: `layers` is "all", k (the last k) or a
    list of block indices (as saved)."""
    from tunewright.models.methods.selective import find_blocks

    where, blocks = find_blocks(model)
    if layers == "all":
        chosen = list(range(len(blocks)))
    elif isinstance(layers, int):
        if layers > len(blocks):
            raise ConfigError(f"method.layers: {layers} but {where} has only {len(blocks)} blocks")
        chosen = list(range(len(blocks) - layers, len(blocks)))
    else:
        chosen = list(layers)
    sites = []
    for i in chosen:
        if placement == "houlsby":
            sites.append((i, _child(blocks[i], ATTENTION, "attention", f"{where}.{i}")))
        sites.append((i, _child(blocks[i], FEED_FORWARD, "feed-forward", f"{where}.{i}")))
    return sites


def _insert(model, placement: str, reduction_factor: int, non_linearity: str, layers) -> dict:
    """Freeze the model, add the adapters; returns the settings `save` records."""
    d = model.config.hidden_size
    m = d // reduction_factor
    if m < 1:
        raise ConfigError(f"method.reduction_factor: {reduction_factor} leaves no bottleneck for hidden size {d}")
    weight = next(model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    sites = adapter_sites(model, placement, layers)
    for _, sublayer in sites:
        with torch.device(weight.device):
            sublayer.add_module("bottleneck", Bottleneck(d, m, non_linearity).to(weight.dtype))
        sublayer.register_forward_hook(_through_adapter)
    settings = {"format": FORMAT, "placement": placement, "reduction_factor": reduction_factor,
                "non_linearity": non_linearity, "layers": sorted({i for i, _ in sites}), "hidden_size": d,
                "model_type": model.config.model_type, "base_model_name_or_path": model.name_or_path or None}
    model._tunewright_bottleneck = settings  # what `save` writes beside the weights
    return settings


def apply(model, cfg: Config, *, new_token_ids=()):
    """Freeze `model` and put an adapter after the chosen sublayers; only the adapters train."""
    from tunewright.models.peft_adapters import refuse_new_tokens

    refuse_new_tokens(new_token_ids, "bottleneck")
    _insert(model, cfg.placement, cfg.reduction_factor, cfg.non_linearity, cfg.layers)
    return model


def _adapter_state(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.state_dict().items() if ".bottleneck." in n}


def save(model, path) -> None:
    """bottleneck.safetensors (the adapters' tensors under their module names) + tunewright_adapter.json."""
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in _adapter_state(model).items()}, str(folder / WEIGHTS))
    (folder / SETTINGS).write_text(json.dumps(model._tunewright_bottleneck, indent=2) + "\n", encoding="utf-8")


def load(model, path) -> None:
    """Load saved adapters into a model prepared by `apply` with the same settings (resume)."""
    load_named(_adapter_state(model), path, WEIGHTS, "bottleneck", str(next(model.parameters()).device))


def load_named(ours: dict[str, torch.Tensor], path, weights: str, method: str, device: str) -> None:
    """Copy the tensors of `path`/`weights` into `ours` (an adapter's state, by name), refusing a file
    whose names or shapes differ (adapters of our own format: bottleneck, cola)."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / weights).is_file():
        raise ConfigError(f"{path}: no {weights} (was it saved by a {method} run?)")
    saved = load_file(str(folder / weights), device=device)
    if set(saved) != set(ours):
        extra, missing = sorted(set(saved) - set(ours)), sorted(set(ours) - set(saved))
        what = f"unexpected tensors {extra[:3]}" if extra else f"missing tensors {missing[:3]}"
        raise ConfigError(f"{path}: the {method} adapter does not fit this model: {what}")
    wrong = [k for k in saved if saved[k].shape != ours[k].shape]
    if wrong:
        raise ConfigError(f"{path}: the {method} adapter does not fit this model: {wrong[0]} is "
                          f"{tuple(saved[wrong[0]].shape)}, here {tuple(ours[wrong[0]].shape)}")
    with torch.no_grad():
        for k, v in saved.items():
            ours[k].copy_(v)


def merge(model):
    raise ConfigError(f"method 'bottleneck' cannot be merged: {CANNOT_MERGE}")


def load_for_inference(model, path):
    """The saved adapters on the base `model` (frozen): settings from tunewright_adapter.json. One to
    a base: several adapters on one base, switched by name, are peft's (models/adapters.py)."""
    from tunewright.models.load import read_json

    settings = read_json(Path(path) / SETTINGS, "bottleneck adapter")
    for key in ("model_type", "hidden_size"):
        if settings.get(key) not in (None, getattr(model.config, key, None)):
            raise ConfigError(f"adapter: {str(path)!r} was trained for a different architecture: its base has "
                              f"{key}={settings[key]!r}, this model has {getattr(model.config, key, None)!r}")
    try:
        _insert(model, settings["placement"], int(settings["reduction_factor"]), settings["non_linearity"],
                [int(i) for i in settings["layers"]])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{Path(path) / SETTINGS}: not a readable bottleneck adapter config ({err})") from None
    model._tunewright_bottleneck["base_model_name_or_path"] = settings.get("base_model_name_or_path")
    load(model, path)
    return model
