"""RLOO (Ahmadian et al. 2024, after Kool et al. 2019): REINFORCE with a leave-one-out baseline, no
value head. Each prompt is answered k = `group_size` times; an answer's reward is its score minus
β times its summed per-token KL (first-order k1 by default, as in the paper and TRL), and its
advantage, for every one of its tokens, is that reward against the mean of its k - 1 siblings':

    r_i = s_i - β Σ_t KL_it,        A_i = r_i - (Σ_{j≠i} r_j) / (k - 1)

optionally whitened over the rollout (normalize_advantages: (A - mean) / (std + 1e-4), as TRL).
The loss is the clipped policy loss, averaged over the minibatch's answer tokens.
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

__all__ = ["Config", "METRICS", "misfit", "setup", "leave_one_out", "advantages",
           *rollout.SHARED]

METRICS = dict(rollout.BASE_METRICS)


class Config(rollout.RolloutConfig):
    name: Literal["rloo"] = Field("rloo", description="RLOO: REINFORCE with a leave-one-out baseline, no value head.")
    group_size: int = Field(2, ge=2, description="Answers sampled per prompt (k).")
    kl_coef: float = Field(0.05, ge=0, description="β of the summed KL subtracted from each answer's reward.")
    normalize_advantages: bool = Field(False, description="Whiten the advantages over the rollout.")


def misfit(run_cfg) -> str | None:
    return rollout.misfit(run_cfg, run_cfg.objective.group_size)


def leave_one_out(rewards_: torch.Tensor, k: int) -> torch.Tensor:
    """[N] advantages r_i - mean of the other k - 1 rewards of its group (groups of k in order)."""
    grouped = rewards_.view(-1, k)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(-1)


def advantages(roll: dict, kl_tokens: torch.Tensor, cfg, state) -> dict:
    adv = leave_one_out(roll["scores"] - cfg.kl_coef * kl_tokens.sum(-1), cfg.group_size)
    if cfg.normalize_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-4)
    return {"advantages": adv[:, None] * roll["answer_mask"]}


# the rollout's setup with this objective's advantages
setup = partial(rollout.setup, value_head=False, advantages=advantages, kl_in_loss=False)
