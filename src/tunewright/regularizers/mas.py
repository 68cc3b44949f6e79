"""MAS: memory-aware synapses, an importance per parameter from how much the model's *output*
moves with it, measured without labels.

    Ω_i = 1/n · Σ_{k=1..n} |∂ ‖f(x_k)‖² / ∂θ_i|       over n training rows, after the task
    penalty = λ · Σ_i Ω_i (θ_i − θ*_i)²               (in the next tasks; Ω adds up over tasks)
    ∂penalty/∂θ_i = 2λ · Ω_i (θ_i − θ*_i)

Aljundi et al. (2018), "Memory Aware Synapses: Learning what (not) to forget" (ECCV), eqs. 2-3 and 8.
f(x) is the last hidden state (the decoder stack's output, the head's input) and ‖f(x)‖² its
squared norm averaged over the row's real positions. Full-vocabulary logits are never taken: the
forward stops at the decoder's output, so the head is not even run (a [T, 49k] output per row
would cost more than the gradient and weigh the vocabulary, not the task). With a classification
head that output is what the label-restricted head reads. The absolute value is taken per row,
before the mean: rows whose gradients disagree in sign must not cancel.
Memory: Ω and θ* are two copies of every trainable parameter.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from pydantic import Field

from tunewright.models.load import base_model
from tunewright.regularizers.anchor import (per_row_mean, previous_importance, trainable_copy,
                                          weighted_distance)
from tunewright.sections import Section

__all__ = ["Config", "setup", "penalty", "finish", "importance", "hidden_norm"]


class Config(Section):
    name: Literal["mas"] = Field("mas", description="MAS: pull the weights toward the previous tasks', weighted by "
                                                   "how much the model's output depends on them.")
    weight: float = Field(1.0, ge=0, description=(
        "Strength λ of the penalty λ·ΣΩ(θ−θ*)², added once per optimizer step."))
    samples: int = Field(200, ge=1, description=(
        "Training rows n the importance is averaged over at the end of the task (the first n of epoch 0's order)."))
    previous: str | None = Field(None, description=(
        "The previous task's final/regularizers folder, whose Ω and anchor this task's penalty uses (a continual "
        "sequence fills it in). None: the first task, no penalty."))


def setup(model, run_dir, cfg: Config) -> dict:
    return {"weight": cfg.weight, "samples": cfg.samples, **previous_importance(model, cfg.previous, "mas")}


def penalty(model, state: dict):
    """(λ · Σ Ω (θ − θ*)² as a float32 scalar, {"distance": sqrt(ΣΩ(θ−θ*)²)})."""
    weighted = weighted_distance(model, state["importance"], state["anchor"])
    return state["weight"] * weighted, {"distance": weighted.detach().sqrt()}


class _Caught(Exception):
    """Raised from the decoder's forward hook: the output is caught, the rest of the forward skipped."""


def hidden_norm(model, batch: dict) -> torch.Tensor:
    """‖f(x)‖² of one batch: the decoder's output [B, T, d], squared norm per position, averaged over
    the real positions (attention mask) of all its rows; a 0-dim tensor with a graph."""
    decoder = base_model(model).get_decoder()
    caught: list[torch.Tensor] = []

    def catch(module, args, out):
        caught.append(out[0])
        raise _Caught  # stop here: the head (full-vocabulary logits) is never computed

    handle = decoder.register_forward_hook(catch)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    try:
        model(**inputs, use_cache=False)
    except _Caught:
        pass
    finally:
        handle.remove()
    hidden = caught[-1][:, -batch["input_ids"].shape[1]:].float()  # [B, T, d]; virtual tokens (prompt tuning) cut
    mask = batch.get("attention_mask", torch.ones(hidden.shape[:2], device=hidden.device)).to(hidden.dtype)
    return (hidden.pow(2).sum(-1) * mask).sum() / mask.sum()


def importance(model, batches, samples: int, output_norm: Callable = hidden_norm) -> dict[str, torch.Tensor]:
    """{name: Ω} over the trainable parameters: the mean over the first `samples` batches (one row each)
    of |∂ output_norm(model, batch) / ∂θ|; float32."""
    return per_row_mean(model, batches, samples, output_norm, torch.abs)


def finish(model, batches, state: dict, loss) -> None:
    """Ω += Ω(this task), θ* ← the weights now. The loss is not used: MAS needs no labels."""
    new = importance(model, batches, state["samples"])
    old = state["importance"]
    state["importance"] = {name: old[name] + o if name in old else o for name, o in new.items()}
    state["anchor"] = trainable_copy(model)
    state["tasks"] += 1
