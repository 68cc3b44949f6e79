"""SI: synaptic intelligence, an importance per parameter accumulated along the training path.

During a task, after each optimizer step t (Δθ(t) the step's update, g(t) the gradient it used):

    ω_i += −g_i(t) · Δθ_i(t)                  each parameter's share of the loss decrease

At the end of the task (Δ_i its total change over the task, ξ a damping that keeps Ω finite):

    Ω_i += ω_i / (Δ_i² + ξ),    θ* ← the weights now,    ω ← 0
    penalty = c · Σ_i Ω_i (θ_i − θ*_i)²         (in the next tasks)
    ∂penalty/∂θ_i = 2c · Ω_i (θ_i − θ*_i)

Zenke, Poole and Ganguli (2017), "Continual Learning Through Synaptic Intelligence" (ICML), eqs. 3-5.
g is the gradient the optimizer step used (the hook's `after_step` sees it: clipped, this penalty's
included), as the common implementations take it; with momentum or Adam Δθ is not −lr·g, which is
the point of the path integral. Memory: five copies of every trainable parameter (ω, the weights
before the step, the task's start, Ω, θ*).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunewright.regularizers.anchor import previous_importance, trainable_copy, weighted_distance
from tunewright.sections import Section

__all__ = ["Config", "setup", "penalty", "after_step", "finish"]


class Config(Section):
    name: Literal["si"] = Field("si", description="SI: pull the weights toward the previous tasks', weighted by "
                                                 "their share of the loss decrease along the training path.")
    weight: float = Field(1.0, ge=0, description=(
        "Strength c of the penalty c·ΣΩ(θ−θ*)², added once per optimizer step."))
    xi: float = Field(0.1, gt=0, description="Damping ξ of Ω = ω / (Δ² + ξ): keeps Ω finite for weights that barely moved.")
    previous: str | None = Field(None, description=(
        "The previous task's final/regularizers folder, whose Ω and anchor this task's penalty uses (a continual "
        "sequence fills it in). None: the first task, no penalty."))


def setup(model, run_dir, cfg: Config) -> dict:
    """Ω and θ* of the previous tasks (empty on the first), ω = 0, and the weights at the task's start."""
    start = trainable_copy(model)
    return {"weight": cfg.weight, "xi": cfg.xi, **previous_importance(model, cfg.previous, "si"),
            "omega": {name: t.new_zeros(t.shape) for name, t in start.items()},
            "start": start, "before_step": {name: t.clone() for name, t in start.items()}}


def penalty(model, state: dict):
    """(c · Σ Ω (θ − θ*)² as a float32 scalar, {"distance": sqrt(ΣΩ(θ−θ*)²)})."""
    weighted = weighted_distance(model, state["importance"], state["anchor"])
    return state["weight"] * weighted, {"distance": weighted.detach().sqrt()}


def after_step(model, state: dict) -> None:
    """ω += −g · Δθ for this step; the weights now become the next step's 'before'."""
    for name, p in model.named_parameters():
        if name not in state["omega"]:
            continue
        now = p.detach().float()
        if p.grad is not None:
            state["omega"][name] -= p.grad.float() * (now - state["before_step"][name])
        state["before_step"][name] = now.clone()


def finish(model, batches, state: dict, loss) -> None:
    """Ω += ω / (Δ² + ξ) over this task's path, θ* ← the weights now; ω and the start begin again."""
    now = trainable_copy(model)
    old = state["importance"]
    for name, theta in now.items():
        new = state["omega"][name] / ((theta - state["start"][name]).pow(2) + state["xi"])
        state["importance"][name] = old[name] + new if name in old else new
    state["anchor"] = now
    state["omega"] = {name: t.new_zeros(t.shape) for name, t in now.items()}
    state["start"] = {name: t.clone() for name, t in now.items()}
    state["tasks"] += 1
