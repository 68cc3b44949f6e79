"""GRPO (Shao et al. 2024, DeepSeekMath): no value head; each prompt is answered `group_size` times
and an answer's advantage is its score against its group's, for every one of its tokens:

    A_i = s_i - mean(s_group)                        scale_rewards: none   (Dr. GRPO's advice)
    A_i = (s_i - mean(s_group)) / (std(s_group) + 1e-4)               group  (the paper; TRL's default)
    A_i = (s_i - mean(s_group)) / (std(s_all) + 1e-4)                 batch  (std over the whole rollout)

(std unbiased, as TRL computes it). The KL to the reference is in the loss, not the reward: per
token + β k3 (kl_coef β; TRL's `beta`, 0 by default: no reference pass is needed then, but one is
still made to log the KL). Token losses are aggregated as `loss_type` says (rollout.NORMALIZERS,
TRL's names): grpo (each answer's mean, then the mean over answers), bnpo (per micro-batch
token mean), dapo (token mean over the optimizer step: TRL's default), dr_grpo (sum / (answers x
max_new_tokens)). ppo_epochs is TRL's num_iterations.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from pydantic import Field

from tunewright.objectives import rollout
# the objective surface this module shares with the other RL objectives, re-exported (rollout.SHARED)
from tunewright.objectives.rollout import (FORMATS, HEAD, PACKABLE, TEMPLATED, UNIT, collate, count, encode,  # noqa: F401
                                           end_ids, load_state, loss, refresh, render, save_state,
                                           steps_per_batch, trainable)

__all__ = ["Config", "METRICS", "misfit", "setup", "group_advantages", "advantages",
           *rollout.SHARED]

METRICS = dict(rollout.BASE_METRICS)


class Config(rollout.RolloutConfig):
    name: Literal["grpo"] = Field("grpo", description="GRPO: group-normalized advantages, no value head.")
    group_size: int = Field(4, ge=2, description="Answers sampled per prompt (TRL's num_generations).")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field("dapo", description=(
        "How token losses are averaged: grpo, bnpo, dr_grpo or dapo (TRL's names)."))
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description=(
        "Divide advantages by the group's std (group), the rollout's (batch) or nothing (none)."))
    kl_coef: float = Field(0.0, ge=0, description="β of the per-token k3 KL term in the loss (TRL's beta).")
    # k3 only: GRPO puts the KL in the loss, where k1's gradient, beta * grad log pi(y), has expectation 0
    # under the policy's own samples, so it would pull nothing toward the reference (TRL offers k3 alone)
    kl_estimator: Literal["k3"] = Field("k3", description=(
        "Per-token KL estimate in the loss: k3 (k1 is refused: in the loss its gradient is zero in expectation)."))


def misfit(run_cfg) -> str | None:
    return rollout.misfit(run_cfg, run_cfg.objective.group_size)


def group_advantages(scores: torch.Tensor, k: int, scale: str) -> torch.Tensor:
    """[N] advantages of N = prompts x k scores, grouped k by k in order."""
    grouped = scores.view(-1, k)
    centred = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)
    if scale == "none":
        return centred
    std = grouped.std(1, keepdim=True).expand_as(grouped).reshape(-1) if scale == "group" else scores.std()
    return centred / (std + 1e-4)


def advantages(roll: dict, kl_tokens: torch.Tensor, cfg, state) -> dict:
    adv = group_advantages(roll["scores"], cfg.group_size, cfg.scale_rewards)
    return {"advantages": adv[:, None] * roll["answer_mask"]}


# the rollout's setup with this objective's advantages (its KL is in the loss)
setup = partial(rollout.setup, value_head=False, advantages=advantages, kl_in_loss=True)
