"""EWC: elastic weight consolidation, a quadratic pull toward the previous tasks' weights θ*,
weighted per parameter by how much those tasks' likelihood depends on it (the diagonal Fisher F).

    penalty = λ/2 · Σ_i F_i (θ_i − θ*_i)²
    ∂penalty/∂θ_i = λ · F_i (θ_i − θ*_i)
    F_i = 1/n · Σ_{k=1..n} (∂ℓ_k/∂θ_i)²        the diagonal empirical Fisher over n training rows

Kirkpatrick et al. (2017), "Overcoming catastrophic forgetting in neural networks" (PNAS). ℓ_k is
row k's loss as the objective sums it (its negative log-likelihood): the Fisher is the mean of
*per-row* squared gradients, not the square of a batch's mean gradient (which cancels the rows'
disagreements and is far smaller). "Empirical": the gradient of the observed label's likelihood,
not an expectation over labels sampled from the model.

Across tasks, the online variant of Schwarz et al. (2018), "Progress & Compress" (ICML): after each
task, F ← γ·F_old + F_new and θ* ← the weights after that task. γ = 1 sums the tasks' Fishers
around one anchor (the original EWC keeps one anchor per task; that costs a copy of the weights per
task and is not built); γ < 1 lets older tasks fade.

In a task sequence, task i's run computes F at its end (`finish`, at the weights final/ holds) and
saves it with θ* in final/regularizers/; task i+1 names that folder in `previous`. The first task
has no previous state: its penalty is 0. Memory: F and θ* are two copies of every trainable
parameter (for full fine-tuning, of the whole model), plus one more while the Fisher is computed.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from tunewright.regularizers.anchor import (per_row_mean, previous_importance, trainable_copy,
                                          weighted_distance)
from tunewright.sections import Section

__all__ = ["Config", "setup", "penalty", "finish", "fisher"]


class Config(Section):
    name: Literal["ewc"] = Field("ewc", description="EWC: pull the weights toward the previous tasks', weighted by "
                                                   "their diagonal Fisher.")
    weight: float = Field(1.0, ge=0, description=(
        "Strength λ of the penalty λ/2·ΣF(θ−θ*)², added once per optimizer step (independent of the batch size, "
        "accumulation and process count). F is a mean squared per-row gradient: choose λ relative to 1/mean(F)."))
    samples: int = Field(200, ge=1, description=(
        "Training rows n the Fisher is estimated from at the end of the task (the first n of epoch 0's seeded order)."))
    gamma: float = Field(1.0, ge=0, le=1, description=(
        "Decay of the older tasks' Fisher (online EWC): F <- gamma*F_old + F_new. 1: the Fishers add up."))
    previous: str | None = Field(None, description=(
        "The previous task's final/regularizers folder, whose Fisher and anchor this task's penalty uses (a "
        "continual sequence fills it in). None: the first task, no penalty."))


def setup(model, run_dir, cfg: Config) -> dict:
    """The previous task's Fisher (`importance`) and anchor θ* (empty on the first task), and the settings."""
    return {"weight": cfg.weight, "samples": cfg.samples, "gamma": cfg.gamma,
            **previous_importance(model, cfg.previous, "ewc")}


def penalty(model, state: dict):
    """(λ/2 · Σ F (θ − θ*)² as a float32 scalar, {"distance": the Fisher-weighted distance sqrt(ΣF(θ−θ*)²)})."""
    weighted = weighted_distance(model, state["importance"], state["anchor"])
    return state["weight"] / 2 * weighted, {"distance": weighted.detach().sqrt()}


def fisher(model, batches, loss, samples: int) -> dict[str, torch.Tensor]:
    """{name: F} over the trainable parameters: the mean over the first `samples` batches (one row
    each) of the squared gradient of `loss(model, batch)`; float32, on the parameters' device."""
    return per_row_mean(model, batches, samples, loss, lambda g: g.pow(2))


def finish(model, batches, state: dict, loss) -> None:
    """F ← γ·F_old + F(this task), θ* ← the weights now: what the next task's penalty holds on to."""
    new = fisher(model, batches, loss, state["samples"])
    old = state["importance"]
    state["importance"] = {name: state["gamma"] * old[name] + f if name in old else f for name, f in new.items()}
    state["anchor"] = trainable_copy(model)
    state["tasks"] += 1
