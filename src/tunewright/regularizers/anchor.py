"""What EWC, SI and MAS share: a per-parameter importance Ω and an anchor θ* (the weights after the
previous task), read from the previous task's saved state, and the weighted distance between them.

    Σ_i Ω_i (θ_i − θ*_i)²        over the parameters the anchor holds (the trainable ones)

Each keeps its own strength and factor (EWC λ/2, SI c, MAS λ) and its own way of measuring Ω.
"""

from __future__ import annotations

from typing import Callable

import torch

from tunewright.regularizers.state import read_state

__all__ = ["weighted_distance", "trainable_copy", "previous_importance", "per_row_mean"]


def trainable_copy(model) -> dict[str, torch.Tensor]:
    """{name: a float32 copy} of each trainable parameter as it is now."""
    return {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}


def previous_importance(model, folder: str | None, name: str) -> dict:
    """{"tasks", "importance", "anchor"} from regularizer `name`'s state saved in `folder` (the previous
    task's final/regularizers), on the model's device; no tasks and empty dicts when `folder` is None."""
    if not folder:
        return {"tasks": 0, "importance": {}, "anchor": {}}
    before = read_state(folder, name)
    device = next(model.parameters()).device
    return {"tasks": before["tasks"], **{key: {k: v.to(device) for k, v in before[key].items()}
                                         for key in ("importance", "anchor")}}


def weighted_distance(model, importance: dict, anchor: dict) -> torch.Tensor:
    """Σ Ω (θ − θ*)², a float32 0-dim tensor with a graph to the parameters (a zero with one when
    there is no anchor yet: the hook differentiates it all the same)."""
    params = dict(model.named_parameters())
    if not anchor:  # one element's zero: its gradient is a dense zero tensor (an expanded one cannot be added to)
        return next(p for p in model.parameters() if p.requires_grad).flatten()[0].float() * 0.0
    # in float32 whatever the parameters' dtype: a bf16 difference rounds away the small steps it weighs
    return sum((importance[name] * (params[name].float() - theta.float()).pow(2)).sum()
               for name, theta in anchor.items())


def per_row_mean(model, batches, samples: int, scalar: Callable, transform: Callable) -> dict[str, torch.Tensor]:
    """{name: 1/n · Σ_k transform(∂ scalar(model, batch_k) / ∂θ)} over the trainable parameters and the
    first n = `samples` batches (one row each: a per-row quantity, not one of the batch's mean
    gradient); float32. Dropout is off while it is measured (the model that is kept, not a noisy one)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    total = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in named}
    was_training, n = model.training, 0
    model.eval()
    try:
        for batch in batches:
            if n == samples:
                break
            with torch.enable_grad():
                grads = torch.autograd.grad(scalar(model, batch), [p for _, p in named], allow_unused=True)
            for (name, _), g in zip(named, grads):
                if g is not None:
                    total[name] += transform(g.float())
            n += 1
    finally:
        model.train(was_training)
    return {name: t / max(n, 1) for name, t in total.items()}
