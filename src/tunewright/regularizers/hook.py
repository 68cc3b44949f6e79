"""The configured regularizers of one run, as the one object the loop and run.py call.

    hook = setup_regularizers(cfg.regularizers, model, run_dir)   # run.py, after the model is prepared
    penalty, metrics = hook.add_penalty(model)   # loop, once per optimizer step, after the backward passes
    hook.after_step(model)                       # loop, after opt.step(), before zero_grad
    hook.finish(model, rows, loss)               # run.py, at the end of a completed run
    hook.save(folder) / hook.load(folder)        # checkpoints and final/: <name>.safetensors + <name>.json

The loop knows nothing of which regularizers there are: it calls these, in this order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from tunewright.errors import ConfigError
from tunewright.regularizers import REGULARIZERS
from tunewright.regularizers.state import has_state, read_state, write_state

__all__ = ["Regularizers", "setup_regularizers"]


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

    def finish(self, model, rows: Callable[[], Iterable[dict]], loss: Callable) -> None:
        """Each member's `finish`, each with its own pass `rows()` over the training rows (one per
        collated batch), moved to the model's device as they are drawn, and the objective's
        `loss(model, batch)`."""
        device = next(model.parameters()).device
        for m in self.members:
            if hasattr(m.module, "finish"):
                on_device = ({k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in rows())
                m.module.finish(model, on_device, m.state, loss)

    def save(self, folder: Path) -> None:
        """`<name>.safetensors` (the state's tensors) and `<name>.json` (its config and the rest)."""
        for m in self.members:
            write_state(folder, m.name, m.cfg.model_dump(mode="json"), m.state)

    def load(self, folder: Path) -> None:
        """Replace each member's state by the one saved in `folder`, each tensor on the device of the
        one `setup` made under the same key."""
        for m in self.members:
            if not has_state(folder, m.name):
                raise ConfigError(f"train.resume: {folder.parent} holds no state of regularizer {m.name!r} (it was "
                                  f"written without it); resume without it, or start a new run")
            m.state = read_state(folder, m.name, like=m.state)


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
