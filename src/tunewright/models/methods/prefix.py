"""Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation")
through peft: n learned key/value pairs per layer, seen by every attention as if n tokens came
before the input; the model is frozen.

    attention over [P_k ; W_k x]  with values [P_v ; W_v x]       P_k, P_v: [layers, kv heads, n, head dim]

Unlike prompt tuning nothing is added to the sequence (the hidden states are the input's own T
positions): the prefix is a KV cache the model starts from, and the input's positions start at n.
A prefix set from the KV cache of a text makes the model read as if that text came first
(`prefix_from_cache` writes one in peft's layout; tests/models/test_prefix.py checks it).

`prefix_projection: true` reparameterises the prefix through an MLP (n x d embeddings -> tanh
hidden of `encoder_hidden_size` -> 2 x layers x kv dim), as in the paper, for steadier training. peft
saves only the projected prefix (what inference needs), so with the projection `save` also
writes `prefix_encoder.safetensors` (the embeddings and the MLP) for a resume. Packing is
refused (each packed row would share one prefix across its examples' positions); cannot merge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tunewright.errors import ConfigError
from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge", "CANNOT_MERGE", "FORMAT", "load_for_inference", "misfit",
           "prefix_from_cache"]

FORMAT = "PREFIX_TUNING"
CANNOT_MERGE = "prefix tuning adds key/value pairs to every attention; no weight of the base model can hold them"
MARKER = "prompt_embeddings"
ENCODER_FILE = "prefix_encoder.safetensors"  # the trainable encoder, for a resume with prefix_projection


class Config(Section):
    name: Literal["prefix"] = Field("prefix", description="Prefix tuning (learned key/value pairs per layer) through peft.")
    num_virtual_tokens: int = Field(20, gt=0, description="Key/value pairs per layer (the prefix length).")
    prefix_projection: bool = Field(False, description=(
        "Reparameterise the prefix through an MLP (embedding -> tanh hidden -> keys and values), as in the paper."))
    encoder_hidden_size: int | None = Field(None, gt=0, description=(
        "Hidden size of that MLP; default: the model's hidden size. Only with prefix_projection."))

    @model_validator(mode="after")
    def _projection(self):
        if self.encoder_hidden_size is not None and not self.prefix_projection:
            raise ValueError("encoder_hidden_size is used only with prefix_projection: true")
        return self


def misfit(run_cfg) -> str | None:
    if run_cfg.data.packing:
        return ("data.packing: not possible with method 'prefix': the prefix would be added once per packed row, "
                "not once per example; turn packing off")
    return None


def apply(model, cfg: Config, *, new_token_ids=()):
    """Wrap `model` in a PeftModel whose only trainable parameters are the prefix (and its MLP)."""
    from peft import PrefixTuningConfig

    from tunewright.models import peft_adapters
    from tunewright.models.load import peft_task_type

    peft_adapters.refuse_new_tokens(new_token_ids, "prefix")
    hidden = cfg.encoder_hidden_size or model.config.hidden_size
    peft_cfg = PrefixTuningConfig(task_type=peft_task_type(model), num_virtual_tokens=cfg.num_virtual_tokens,
                                  prefix_projection=cfg.prefix_projection,
                                  encoder_hidden_size=hidden if cfg.prefix_projection else None)
    return peft_adapters.wrap(model, peft_cfg, "prefix tuning")


def prefix_from_cache(model, key_values) -> None:
    """Set the prefix to `key_values` (per layer a (key, value) pair, each [1, kv heads, n, head dim],
    e.g. a DynamicCache's layers after the base model read a text), in peft's layout: the
    embedding row of virtual token i is [layer 0 key, layer 0 value, layer 1 key, ...] flattened
    over (kv head, head dim). Without prefix_projection only (the prefix is then the embedding)."""
    import torch

    encoder = model.prompt_encoder[model.active_adapter]
    if getattr(encoder, "prefix_projection", False):
        raise ConfigError("prefix_from_cache: the prefix goes through an MLP (prefix_projection); set it without")
    rows = []
    for key, value in key_values:
        for t in (key, value):  # [1, heads, n, dim] -> [n, heads * dim]
            rows.append(t[0].permute(1, 0, 2).reshape(t.shape[2], -1))
    with torch.no_grad():
        encoder.embedding.weight.copy_(torch.cat(rows, dim=-1))


def save(model, path) -> None:
    """The PEFT adapter (the projected prefix: what inference needs); with prefix_projection also
    the encoder's own tensors, which training continues from."""
    from safetensors.torch import save_file

    from tunewright.models import peft_adapters

    peft_adapters.save(model, path)
    encoder = model.prompt_encoder[model.active_adapter]
    if getattr(encoder, "prefix_projection", False):
        save_file({k: v.detach().contiguous() for k, v in encoder.state_dict().items()}, str(Path(path) / ENCODER_FILE))


def load(model, path) -> None:
    """Resume: the adapter, or with prefix_projection the encoder `save` wrote beside it."""
    from safetensors.torch import load_file

    from tunewright.models import peft_adapters

    encoder = model.prompt_encoder[model.active_adapter]
    if not getattr(encoder, "prefix_projection", False):
        peft_adapters.load(model, path, what="prefix tuning", marker=MARKER)
        return
    file = Path(path) / ENCODER_FILE
    if not file.is_file():
        raise ConfigError(f"{path}: no {ENCODER_FILE}: a prefix_projection run resumes from its encoder, which this "
                          f"folder does not hold (saved without prefix_projection, or by plain peft?)")
    try:
        encoder.load_state_dict(load_file(str(file), device=str(encoder.embedding.weight.device)))
    except RuntimeError as err:
        raise ConfigError(f"{path}: the prefix encoder does not fit this model: {peft_adapters.reason(err)}") from None


def merge(model):
    raise ConfigError(f"method 'prefix' cannot be merged: {CANNOT_MERGE}")


def load_for_inference(model, path, adapter_name: str = "default"):
    from tunewright.models import peft_adapters

    return peft_adapters.load_adapter(model, path, peft_type=FORMAT, what="prefix tuning", marker=MARKER,
                                      trainable=False, field="adapter", adapter_name=adapter_name)
