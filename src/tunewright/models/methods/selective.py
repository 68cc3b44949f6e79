"""Selective fine-tuning: train only parameters chosen by name pattern, the last k layers, or
biases only (BitFit, Ben Zaken et al. 2021); everything else stays frozen.

Selection: the union of `patterns` and `last_k_layers` (every parameter when neither is given),
then `bias_only` keeps just the bias terms of it, so `bias_only: true` alone is BitFit and
`last_k_layers: 2, bias_only: true` trains the biases of the last two blocks. Rows of newly added
tokens need training whatever the selection, so the input and output embeddings train with them.
Saves the whole model as a plain transformers folder (loadable with `AutoModel*`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from tunewright.errors import ConfigError
from tunewright.models.methods import full
from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge", "CANNOT_MERGE", "FORMAT", "load_for_inference",
           "find_blocks", "misfit"]

FORMAT = full.FORMAT  # the whole model, frozen weights included
CANNOT_MERGE = None


class Config(Section):
    name: Literal["selective"] = Field("selective", description="Train a chosen subset of parameters.")
    patterns: list[str] = Field(default_factory=list, description="Regexes matched (re.search) against parameter names.")
    last_k_layers: int | None = Field(None, gt=0, description="Train every parameter of the last k transformer blocks.")
    bias_only: bool = Field(False, description="BitFit: train only bias terms.")

    @model_validator(mode="after")
    def _something(self):
        if not (self.patterns or self.last_k_layers or self.bias_only):
            raise ValueError("selective needs at least one of patterns, last_k_layers, bias_only")
        return self


def find_blocks(model) -> tuple[str, list]:
    """(name, blocks) of the model's stack of transformer blocks, found without knowing the
    architecture: the `nn.ModuleList` of same-class modules holding the most parameters (for an
    encoder-decoder that is the decoder's, whose blocks also carry cross-attention)."""
    import torch

    best, best_size = None, 0
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        if len({type(child) for child in mod}) != 1:
            continue
        size = sum(p.numel() for p in mod.parameters())
        if size > best_size:
            best, best_size = (name, list(mod)), size
    if best is None:
        raise ConfigError(f"method.last_k_layers: found no list of transformer blocks in this "
                          f"{type(model).__name__}; use method.patterns instead")
    return best


def _pattern_hits(named: dict, pattern: str) -> set[int]:
    try:
        rx = re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"method.patterns: {pattern!r} is not a valid regular expression ({err})") from None
    return {id(p) for n, p in named.items() if rx.search(n)}


def misfit(run_cfg) -> str | None:
    return full.quantized_misfit(run_cfg, "selective")


def apply(model, cfg: Config, *, new_token_ids=()):
    """Freeze everything, then unfreeze the selection (see the module docstring)."""
    named = dict(model.named_parameters())
    examples = ", ".join(list(named)[:2] + list(named)[-2:])
    chosen: set[int] = set()
    for pattern in cfg.patterns:
        hits = _pattern_hits(named, pattern)
        if not hits:
            raise ConfigError(f"method.patterns: {pattern!r} matches no parameter name (patterns: {cfg.patterns}); "
                              f"names look like: {examples}")
        chosen |= hits
    if cfg.last_k_layers:
        where, blocks = find_blocks(model)
        if cfg.last_k_layers > len(blocks):
            raise ConfigError(f"method.last_k_layers: {cfg.last_k_layers} but {where} has only {len(blocks)} blocks")
        chosen |= {id(p) for block in blocks[-cfg.last_k_layers:] for p in block.parameters()}
    if not (cfg.patterns or cfg.last_k_layers):
        chosen = {id(p) for p in named.values()}
    if cfg.bias_only:
        chosen &= {id(p) for n, p in named.items() if n.rsplit(".", 1)[-1] == "bias"}
        if not chosen:
            raise ConfigError(f"method.bias_only: the selection holds no bias parameters (this "
                              f"{model.config.model_type} model's layers may have none, e.g. Llama); "
                              f"names look like: {examples}")
    if new_token_ids:
        for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
            if layer is not None:
                chosen.add(id(layer.weight))

    for p in named.values():
        p.requires_grad_(id(p) in chosen)
    return model


def save(model, path) -> None:
    """The whole model as a plain transformers folder (frozen weights included: loadable alone)."""
    full.save(model, path)


def load(model, path) -> None:
    full.load(model, path)


def merge(model):
    return model


def load_for_inference(model, path):
    return full.load_for_inference(model, path)
