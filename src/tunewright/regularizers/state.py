"""A regularizer's state on disk: `<name>.safetensors` for its tensors and `<name>.json` for its
config and the rest (never pickle). The hook saves and restores it with checkpoints and final/; a
regularizer that carries state from one task to the next (EWC, SI, MAS) reads the previous task's
with `read_state` in its `setup`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

__all__ = ["write_state", "read_state", "has_state"]

_SEP = "/"  # a dict of tensors {"theta0": {"a.b": t}} is stored as the safetensors key "theta0/a.b"


def write_state(folder: Path, name: str, config: dict, state: dict) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, rest = _split(name, state)
    save_file(tensors, folder / f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps({"name": name, "config": config, "state": rest}, indent=1))


def has_state(folder: Path, name: str) -> bool:
    return (Path(folder) / f"{name}.safetensors").is_file() and (Path(folder) / f"{name}.json").is_file()


def read_state(folder: Path, name: str, like: dict | None = None) -> dict:
    """The state `save` wrote for regularizer `name` in `folder`: its JSON rest and its tensors, each
    tensor on the device of the one under the same key in `like` (else on the CPU)."""
    folder, like = Path(folder), like or {}
    loaded = dict(json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))["state"])
    for key, t in load_file(folder / f"{name}.safetensors").items():
        top, _, sub = key.partition(_SEP)
        if sub:
            same = like.get(top, {}).get(sub) if isinstance(like.get(top), dict) else None
            loaded.setdefault(top, {})[sub] = t.to(same.device) if torch.is_tensor(same) else t
        else:
            same = like.get(top)
            loaded[top] = t.to(same.device) if torch.is_tensor(same) else t
    return loaded


def _split(name: str, state: dict) -> tuple[dict, dict]:
    """(flat tensors for safetensors, the JSON rest) of a state dict."""
    tensors, rest = {}, {}
    for key, value in state.items():
        if _SEP in key:
            raise ValueError(f"regularizer {name!r}: state key {key!r} must not contain {_SEP!r}")
        if torch.is_tensor(value):
            tensors[key] = value.detach().contiguous().cpu()
        elif isinstance(value, dict) and value and all(torch.is_tensor(v) for v in value.values()):
            tensors.update({f"{key}{_SEP}{k}": v.detach().contiguous().cpu() for k, v in value.items()})
        else:
            rest[key] = value
    return tensors, rest
