"""The rloo objective: leave-one-out advantages on a fixed rollout equal hand values, with the
summed KL taken from the reward first; normalize_advantages whitens them."""

from __future__ import annotations

import torch

from tunewright.objectives import rloo


def test_leave_one_out_advantages_on_a_fixed_rollout():
    # k = 3. group [1, 2, 6]: baselines (2+6)/2 = 4, (1+6)/2 = 3.5, (1+2)/2 = 1.5 -> [-3, -1.5, 4.5]
    # group [0, 0, 3]: baselines 1.5, 1.5, 0 -> [-1.5, -1.5, 3]
    got = rloo.leave_one_out(torch.tensor([1.0, 2, 6, 0, 0, 3]), 3)
    assert got.tolist() == [-3.0, -1.5, 4.5, -1.5, -1.5, 3.0]


def test_the_kl_is_taken_from_the_reward_before_the_baseline():
    cfg = rloo.Config(rewards=[{"function": "m:f"}], group_size=3, kl_coef=0.5)
    kl = torch.zeros(6, 2)
    kl[2] = torch.tensor([1.5, 0.5])  # answer 3's summed KL is 2: its reward 6 - 0.5 x 2 = 5
    mask = torch.ones(6, 2)
    adv = rloo.advantages({"scores": torch.tensor([1.0, 2, 6, 0, 0, 3]), "answer_mask": mask}, kl, cfg, None)["advantages"]
    # rewards [1, 2, 5]: baselines 3.5, 3, 1.5 -> [-2.5, -1, 3.5]
    assert adv[:3, 0].tolist() == [-2.5, -1.0, 3.5] and torch.equal(adv[:, 0], adv[:, 1])
    white = rloo.advantages({"scores": torch.tensor([1.0, 2, 6, 0, 0, 3]), "answer_mask": mask}, kl,
                            cfg.model_copy(update={"normalize_advantages": True}), None)["advantages"][:, 0]
    plain = adv[:, 0]
    torch.testing.assert_close(white, (plain - plain.mean()) / (plain.std() + 1e-4))
