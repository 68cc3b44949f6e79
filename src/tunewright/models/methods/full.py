"""Full fine-tuning: every parameter trains; saves and merges as a plain transformers folder.

Memory: AdamW keeps two fp32 moments per parameter, so training needs about 16 bytes per parameter
(weights, grads, two moments) before activations; the adapters of lora.py need a fraction of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from tunewright.errors import ConfigError
from tunewright.models.saved import PLAIN
from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge", "CANNOT_MERGE", "FORMAT", "load_for_inference",
           "load_weights", "misfit", "quantized_misfit"]

FORMAT = PLAIN  # `save` writes a whole transformers model
CANNOT_MERGE = None  # nothing to fold in: the weights are the model


class Config(Section):
    name: Literal["full"] = Field("full", description="Train every parameter.")


def misfit(run_cfg) -> str | None:
    """A quantized base is frozen storage (bitsandbytes' 4/8-bit layers have no gradient): full fine-tuning
    cannot train it in place."""
    return quantized_misfit(run_cfg, "full")


def quantized_misfit(run_cfg, name: str) -> str | None:
    if run_cfg.model.load_in_4bit or run_cfg.model.load_in_8bit:
        bits = 4 if run_cfg.model.load_in_4bit else 8
        return (f"method.name: {name} trains base weights in place, but model.load_in_{bits}bit stores them "
                f"quantized and frozen; use method.name: lora (with load_in_4bit: QLoRA) or another adapter method")
    return None


def apply(model, cfg: Config, *, new_token_ids=()):
    """Make every parameter trainable (new token rows included, with the rest of the embeddings)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save(model, path) -> None:
    """A plain transformers folder: config.json, generation_config.json, model*.safetensors."""
    model.save_pretrained(str(path))


def load(model, path) -> None:
    """Load the weights `save` wrote back into `model` (resume)."""
    load_weights(model, path)


def merge(model):
    return model


def load_for_inference(model, path):
    """`model` was loaded from `path` itself (a plain folder is its own base): nothing to add."""
    return model


def load_weights(model, path) -> None:
    """Copy the tensors of `path/model*.safetensors` into `model`, in place.

    Tied parameters are saved once (transformers drops the alias); a missing name is fine when a
    parameter it shares storage with was loaded. A folder whose names do not match (transformers 5
    converts some checkpoint layouts on load, e.g. fused MoE experts) goes through `from_pretrained`.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        hint = " (it holds a LoRA adapter)" if (folder / "adapter_model.safetensors").is_file() else ""
        raise ConfigError(f"{path}: no model*.safetensors weights{hint}")
    state: dict = {}
    for f in files:
        state.update(load_file(str(f), device=str(next(model.parameters()).device)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in state}
    params = dict(model.named_parameters(remove_duplicate=False))
    missing = [n for n in missing if not (n in params and id(params[n]) in loaded)]
    missing = [n for n in missing if n in params]  # non-persistent buffers are never saved
    if missing or unexpected:
        _load_converted(model, folder, missing or unexpected)


def _load_converted(model, folder: Path, names: list[str]) -> None:
    try:
        other = type(model).from_pretrained(str(folder), dtype=next(model.parameters()).dtype)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{folder}: weights do not match the model ({names[:3]}): {err}") from None
    missing, unexpected = model.load_state_dict(other.state_dict(), strict=False)
    if [n for n in missing if n in dict(model.named_parameters())] or unexpected:
        raise ConfigError(f"{folder}: weights do not match the model (e.g. {(missing or unexpected)[:3]})")
