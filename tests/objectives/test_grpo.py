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


def test_the_loss_adds_the_k3_kl_and_weighs_tokens(monkeypatch):
    # fixed log-probs instead of a model: ratio e^(logp - old), k3 to the reference, β = 0.5
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    entropy = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    monkeypatch.setattr(rollout, "token_stats", lambda model, batch, cfg, head=None: (logp, entropy, None))
    batch = {"old_logps": torch.tensor([[-1.0, -2.0], [-0.5, -3.0 + 0.5]]), "ref_logps": torch.tensor([[-1.5, -1.0],
                                                                                                       [-0.5, -3.0]]),
             "advantages": torch.tensor([[1.0, 1.0], [-2.0, -2.0]]), "answer_mask": torch.tensor([[1.0, 1], [1, 0]]),
             "weights": torch.tensor([[0.5, 0.5], [1.0, 1.0]]), "token_weights": torch.full((2, 2), 2 / 3),
             "reward": torch.tensor([1.0, 0.0]),
             "reward_std": torch.tensor([0.5, 0.5]), "kl": torch.tensor([0.2, 0.0]), "answer_length": torch.tensor([2.0, 1.0])}
    cfg = grpo.Config(rewards=[{"function": "m:f"}], kl_coef=0.5)
    state = rollout.State(None, [], None, [], kl_coef=0.0, kl_in_loss=True)
    total, metrics = rollout.loss(None, batch, cfg, state)
    # policy terms (ratio 1 on the three real tokens): -1, -1, 2; the padded fourth token weighs 0
    # k3: e^-0.5 - 1 + 0.5 = 0.10653066, e^1 - 1 - 1 = 0.71828183, 0
    want = 0.5 * (-1 + 0.5 * 0.10653066) + 0.5 * (-1 + 0.5 * 0.71828183) + 1.0 * (2 + 0)
    assert total.item() == pytest.approx(want, abs=1e-6)
    assert metrics["policy_loss"].item() == pytest.approx(0.5 * -1 + 0.5 * -1 + 2.0)
    # diagnostics are token means whatever the loss's weights: 2 rows x mean(1, 2, 3) = 4 (w would give 4.5)
    assert metrics["clip_fraction"].item() == 0 and metrics["entropy"].item() == pytest.approx(4.0)


def test_a_grpo_run_samples_group_size_answers_per_prompt(tmp_path, tiny_model_dir):
    import json

    from safetensors.torch import load_file

    import tunewright

    rows = [{"instruction": f"Say {i}.", "input": "", "output": "ok"} for i in range(8)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "r.py").write_text("def length(prompts, answers):\n    return [float(len(a)) for a in answers]\n")
    result = tunewright.train({
        "model": {"name": tiny_model_dir("llama")},
        "data": {"datasets": [{"path": str(tmp_path / "p.jsonl")}], "template": "alpaca", "cutoff_len": 48},
        "method": {"name": "lora", "r": 4},
        "objective": {"name": "grpo", "group_size": 3, "minibatches": 3, "max_new_tokens": 4, "kl_coef": 0.1,
                      "loss_type": "grpo", "rewards": [{"function": str(tmp_path / "r.py") + ":length"}]},
        "train": {"batch_size": 2, "micro_batch_size": 1, "max_steps": 3, "mixed_precision": "fp32"},
        "output": {"dir": str(tmp_path / "runs"), "name": "g"}})
    buffer = load_file(result.run_dir / "checkpoints" / "step-3" / "objective" / "rollout.safetensors")
    ids, width = buffer["buffer.input_ids"], buffer["buffer.input_ids"].shape[1] - buffer["buffer.answer_mask"].shape[1]
    assert ids.shape[0] == 6  # 2 prompts x 3 answers, in groups of 3 that share their prompt
    assert all(torch.equal(ids[i, :width], ids[i - i % 3, :width]) for i in range(6))
    assert not torch.equal(ids[0, :width], ids[3, :width])


def test_k1_in_the_loss_is_refused():
    # in the loss, k1's gradient beta * grad log pi(y) is zero in expectation over the policy's own samples
    from tunewright.config import load_config
    from tunewright.errors import ConfigError
    raw = {"model": {"name": "m"}, "data": {"datasets": [{"path": "x.jsonl"}]},
           "objective": {"name": "grpo", "rewards": [{"function": "m:f"}], "kl_estimator": "k1"},
           "train": {"batch_size": 4, "micro_batch_size": 2}}
    with pytest.raises(ConfigError, match="objective.kl_estimator"):
        load_config(raw=raw)
    assert load_config(raw={**raw, "objective": {**raw["objective"], "kl_estimator": "k3"}}).objective.kl_estimator == "k3"
