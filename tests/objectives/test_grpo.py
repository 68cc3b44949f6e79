"""The grpo objective: group-normalized advantages on a fixed rollout equal hand values for each
scale_rewards; each loss_type's token weights give TRL's normalization; a short run trains."""

from __future__ import annotations

import math

import pytest
import torch

from tunewright.objectives import grpo, rollout

SCORES = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])  # two prompts, k = 3 answers each


def test_group_advantages_on_a_fixed_rollout():
    # group 1: mean 3, centred [-2, -1, 3], unbiased std sqrt((4 + 1 + 9) / 2) = sqrt(7)
    # group 2: mean 1, centred [-1, -1, 2], unbiased std sqrt((1 + 1 + 4) / 2) = sqrt(3)
    s7, s3 = math.sqrt(7), math.sqrt(3)
    torch.testing.assert_close(grpo.group_advantages(SCORES, 3, "none"), torch.tensor([-2.0, -1, 3, -1, -1, 2]))
    want = torch.tensor([-2 / s7, -1 / s7, 3 / s7, -1 / s3, -1 / s3, 2 / s3])
    # (TRL adds 1e-4 to the std)
    torch.testing.assert_close(grpo.group_advantages(SCORES, 3, "group"), want * torch.tensor(
        [s7 / (s7 + 1e-4)] * 3 + [s3 / (s3 + 1e-4)] * 3), rtol=0, atol=1e-6)
    # batch: mean of all 6 is 2, squared deviations 1+0+16+4+4+1 = 26, std sqrt(26/5)
    sb = math.sqrt(26 / 5) + 1e-4
    torch.testing.assert_close(grpo.group_advantages(SCORES, 3, "batch"),
                               torch.tensor([-2.0, -1, 3, -1, -1, 2]) / sb, rtol=0, atol=1e-6)


def test_advantages_are_the_answers_own_on_each_of_its_tokens():
    mask = torch.tensor([[1.0, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    cfg = grpo.Config(rewards=[{"function": "m:f"}], group_size=3, scale_rewards="none")
    adv = grpo.advantages({"scores": SCORES, "answer_mask": mask}, torch.zeros(6, 3), cfg, None)["advantages"]
    assert adv.tolist() == [[-2, -2, 0], [-1, 0, 0], [3, 3, 3], [-1, -1, 0], [-1, -1, -1], [2, 0, 0]]


@pytest.mark.parametrize(("loss_type", "want"), [
    # token losses l = 1 everywhere; answers of 2 and 1 tokens (micro-batch 1) and 3 and 2 (micro-batch 2);
    # the loop divides Σ w l by the 4 answers
    ("grpo", 1.0),                        # mean over answers of their mean token loss
    ("dapo", 1.0),                        # Σ l / 8 tokens
    ("bnpo", 1.0),                        # mean over micro-batches of Σ l / their tokens
    ("dr_grpo", 8 / (4 * 5)),             # Σ l / (4 answers x max_new_tokens 5)
])
def test_loss_types_normalize_as_trl_does(loss_type, want):
    mask = torch.tensor([[1.0, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]])
    cfg = grpo.Config(rewards=[{"function": "m:f"}], loss_type=loss_type, max_new_tokens=5)
    w = rollout.NORMALIZERS[loss_type](mask, 2, cfg)
    assert (w * mask).sum().item() / 4 == pytest.approx(want)
    # a loss on one token only (the second answer's) tells the normalizations apart
    one = torch.zeros_like(mask)
    one[1, 0] = 1.0
    got = (w * one).sum().item() / 4
    expected = {"grpo": 1 / 4, "dapo": 1 / 8, "bnpo": 0.5 * (1 / 3), "dr_grpo": 1 / 20}[loss_type]
    assert got == pytest.approx(expected)
