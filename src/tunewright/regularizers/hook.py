"""The configured regularizers of one run, as the one object the loop and run.py call.

    hook = setup_regularizers(cfg.regularizers, model, run_dir)   # run.py, after the model is prepared
    penalty, metrics = hook.add_penalty(model)   # loop, once per optimizer step, after the backward passes
    hook.after_step(model)                       # loop, after opt.step(), before zero_grad
    hook.finish(model, batches)                  # run.py, at the end of a completed run
    hook.save(folder) / hook.load(folder)        # checkpoints and final/: <name>.safetensors + <name>.json

The loop knows nothing of which regularizers there are: it calls these, in this order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors.torch import load_file, save_file

from tunewright.errors import ConfigError
from tunewright.regularizers import REGULARIZERS

__all__ = ["Regularizers", "setup_regularizers"]

_SEP = "/"  # a dict of tensors {"theta0": {"a.b": t}} is stored as the safetensors key "theta0/a.b"


@dataclass
class _Member:
    name: str
    module: object  # the regularizer's module (regularizers/__init__.py: Regularizer)
    cfg: object
    state: dict


class Regularizers:
    """The run's regularizers with their states, in config order."""

    def __init__(self, members: list[_Member]):
        self.members = members

    def add_penalty(self, model) -> tuple[float, dict]:
        """Add the gradient of the summed penalties to each trainable parameter's `.grad`, once.

        `model` is the unwrapped model: `torch.autograd.grad` on its parameters computes the
        penalty's gradient without accumulating into `.grad` through the DDP wrapper's hooks, which
        would all-reduce it (count it once per rank) a second time. Returns (the summed penalty,
        {"reg_<name>": its value, "reg_<name>_<key>": its metrics}), read from the device at once."""
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.enable_grad():
            values, extra = [], []
            for m in self.members:
                loss, metrics = m.module.penalty(model, m.state)
                values.append(loss)
                extra += [(f"reg_{m.name}_{k}", v) for k, v in metrics.items()]
            total = sum(values)
            if torch.is_tensor(total) and total.requires_grad:
                grads = torch.autograd.grad(total, params, allow_unused=True)
                for p, g in zip(params, grads):
                    if g is None:  # a parameter no penalty touches
                        continue
                    if p.grad is None:
                        p.grad = g
                    else:
                        p.grad.add_(g)
        device = params[0].device
        shown = [total, *values, *(v for _, v in extra)]
        total_value, *numbers = torch.stack([torch.as_tensor(v, device=device).detach().double().reshape(())
                                             for v in shown]).tolist()
        names = [f"reg_{m.name}" for m in self.members] + [k for k, _ in extra]
        return total_value, dict(zip(names, numbers))

    def after_step(self, model) -> None:
        for m in self.members:
            if hasattr(m.module, "after_step"):
                m.module.after_step(model, m.state)

    def finish(self, model, batches: Callable[[], Iterable[dict]]) -> None:
        """Each member's `finish`, each with its own pass `batches()` over the training micro-batches,
        moved to the model's device as they are drawn."""
        device = next(model.parameters()).device
        for m in self.members:
            if hasattr(m.module, "finish"):
                on_device = ({k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches())
                m.module.finish(model, on_device, m.state)

    def save(self, folder: Path) -> None:
        """`<name>.safetensors` (the state's tensors) and `<name>.json` (its config and the rest)."""
        folder.mkdir(parents=True, exist_ok=True)
        for m in self.members:
            tensors, rest = _split(m.name, m.state)
            save_file(tensors, folder / f"{m.name}.safetensors")
            (folder / f"{m.name}.json").write_text(json.dumps(
                {"name": m.name, "config": m.cfg.model_dump(mode="json"), "state": rest}, indent=1))

    def load(self, folder: Path) -> None:
        """Replace each member's state by the one saved in `folder`, each tensor on the device of the
        one `setup` made under the same key."""
        for m in self.members:
            tensors_file, rest_file = folder / f"{m.name}.safetensors", folder / f"{m.name}.json"
            if not (tensors_file.is_file() and rest_file.is_file()):
                raise ConfigError(f"train.resume: {folder.parent} holds no state of regularizer {m.name!r} (it was "
                                  f"written without it); resume without it, or start a new run")
            loaded = dict(json.loads(rest_file.read_text(encoding="utf-8"))["state"])
            for key, t in load_file(tensors_file).items():
                top, _, sub = key.partition(_SEP)
                if sub:
                    like = m.state.get(top, {}).get(sub)
                    loaded.setdefault(top, {})[sub] = t.to(like.device) if like is not None else t
                else:
                    like = m.state.get(top)
                    loaded[top] = t.to(like.device) if torch.is_tensor(like) else t
            m.state = loaded


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


def setup_regularizers(configs: list, model, run_dir: Path) -> Regularizers | None:
    """Each configured regularizer's `setup` on `model` (unwrapped, after DDP has made every rank's
    weights the same); None when there are none, so the loop's default path is untouched."""
    if not configs:
        return None
    members = []
    for cfg in configs:
        module = REGULARIZERS.get(cfg.name)
        members.append(_Member(cfg.name, module, cfg, module.setup(model, Path(run_dir), cfg)))
    return Regularizers(members)
