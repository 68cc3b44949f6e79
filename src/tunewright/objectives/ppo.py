"""PPO under a KL penalty (Ziegler et al. 2019; Stiennon et al. 2020): the policy samples answers,
the reward sources score them, a value head learns the return, and the clipped policy and value
losses (Schulman et al. 2017) move the policy while a per-token KL to the reference keeps it near it.

Per answer token t (rollout.py samples the answers and holds the loss), with V the value head on the
policy's hidden state before token t, β the KL coefficient and s the answer's shaped score
(rewards.py) on its last token T:

    r_t   = -β KL_t + [t = T] s                                   KL_t: the k1 or k3 estimate
    δ_t   = r_t + γ V_{t+1} - V_t                                 (V_{T+1} = 0)
    A_t   = δ_t + γ λ A_{t+1}                                     GAE (Schulman et al. 2016); returns R_t = A_t + V_t
    A_t  <- (A_t - mean A) / std A over the rollout's tokens      when whiten_advantages
    value loss  ½ max((V - R)², (V_old + clip(V - V_old, ±ε_v) - R)²)

Adaptive β (Ziegler et al. 2019, trlX's AdaptiveKLController), after each rollout with mean KL per
answer KL and n answers:  β <- β (1 + clip(KL / target - 1, -0.2, 0.2) n / horizon).
Token losses are averaged over the minibatch's answer tokens (trlX's masked mean).

The policy is trained by the run's method (LoRA, full, or selective: trlX's num_layers_unfrozen =
`method.name: selective` with the last k layers); the value head (hidden -> 1, nn.Linear's initialization)
trains beside it at train.learning_rate and is saved with each checkpoint. Note: train.max_grad_norm
clips the model's gradients, not the value head's (its loss is already clipped by cliprange_value).
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from pydantic import Field

from tunewright.objectives import rewards, rollout
# the objective surface this module shares with the other RL objectives, re-exported (rollout.SHARED)
from tunewright.objectives.rollout import (FORMATS, HEAD, PACKABLE, TEMPLATED, UNIT, collate, count, encode,  # noqa: F401
                                           end_ids, load_state, loss, refresh, render, save_state,
                                           steps_per_batch, trainable)
from tunewright.sections import Section

__all__ = ["Config", "METRICS", "misfit", "setup", "gae", "adaptive_kl", "advantages",
           *rollout.SHARED]

METRICS = {**rollout.BASE_METRICS, "value_loss": "mean", "kl_coef": "mean"}


class AdaptiveKL(Section):
    target: float = Field(..., gt=0, description="The KL (nats per answer) the coefficient steers toward.")
    horizon: int = Field(10000, ge=1, description="Answers over which a deviation from the target is corrected.")


class Config(rollout.RolloutConfig):
    name: Literal["ppo"] = Field("ppo", description="PPO with a value head under a per-token KL penalty.")
    kl_coef: float = Field(0.05, ge=0, description=(
        "β, the per-token KL penalty's coefficient (its start when adaptive)."))
    adaptive_kl: AdaptiveKL | None = Field(None, description="Adapt β toward a target KL (Ziegler et al.).")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount γ of GAE.")
    lam: float = Field(0.95, ge=0, le=1, description="λ of GAE.")
    whiten_advantages: bool = Field(True, description=(
        "Whiten advantages over the rollout's tokens (with near-zero rewards this amplifies noise)."))
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    cliprange_value: float = Field(0.2, gt=0, description="Clip range of the value head's change.")


def misfit(run_cfg) -> str | None:
    return rollout.misfit(run_cfg)


def gae(rewards_: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """(advantages [N, A], returns [N, A]) by generalized advantage estimation over each answer's
    tokens (mask [N, A]); nothing flows past an answer's last token."""
    n, a = rewards_.shape
    adv = torch.zeros_like(rewards_)
    last = torch.zeros(n, dtype=rewards_.dtype, device=rewards_.device)
    for t in reversed(range(a)):
        more = mask[:, t + 1] if t + 1 < a else torch.zeros_like(last)
        next_value = values[:, t + 1] * more if t + 1 < a else torch.zeros_like(last)
        delta = rewards_[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * more
        adv[:, t] = last
    adv = adv * mask
    return adv, (adv + values) * mask


def adaptive_kl(coef: float, kl: float, target: float, horizon: int, n: int) -> float:
    """Ziegler et al.'s proportional controller: β (1 + clip(KL/target - 1, ±0.2) n / horizon)."""
    error = min(max(kl / target - 1, -0.2), 0.2)
    return coef * (1 + error * n / horizon)


def advantages(roll: dict, kl_tokens: torch.Tensor, cfg, state) -> dict:
    mask = roll["answer_mask"]
    per_token = -state.kl_coef * kl_tokens + rewards.token_rewards(roll["scores"], mask)
    adv, returns = gae(per_token, roll["values"], mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        adv = rollout.whiten(adv, mask)
    if cfg.adaptive_kl is not None:  # after this rollout's rewards: the next one uses the new β
        state.kl_coef = adaptive_kl(state.kl_coef, float(roll["kl"].mean()), cfg.adaptive_kl.target,
                                    cfg.adaptive_kl.horizon, mask.shape[0])
    return {"advantages": adv, "returns": returns}


# the rollout's setup with this objective's advantages and value head
setup = partial(rollout.setup, value_head=True, advantages=advantages, kl_in_loss=False)
