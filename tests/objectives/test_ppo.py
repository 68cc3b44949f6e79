"""The ppo objective (objectives/ppo.py, rollout.py, rewards.py): GAE, the clipped losses and the adaptive
KL coefficient equal hand-worked numbers; the reward sits on the last generated token whatever the
padding; with zero reward the policy stays near the reference; with KL coefficient 0 a rewarded token
becomes more frequent; and a run resumed inside a rollout ends with the uninterrupted run's weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import tunewright
from tunewright.config import load_config
from tunewright.errors import ConfigError
from tunewright.objectives import ppo, rewards, rollout
from tunewright.training.logging import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- hand-worked oracles

def test_gae_and_returns_on_a_five_token_answer():
    # γ = 0.9, λ = 0.8 (γλ = 0.72); a sixth, padded position holds junk that must not flow back
    r = torch.tensor([[0.1, -0.2, 0.0, 0.3, 1.0, 7.0]])
    v = torch.tensor([[0.5, 0.4, 0.3, 0.2, 0.1, 9.0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 1, 0]])
    adv, ret = ppo.gae(r, v, mask, gamma=0.9, lam=0.8)
    # δ_t = r_t + γ V_{t+1} - V_t (V_5 = 0: past the answer):
    #   δ4 = 1.0 - 0.1 = 0.9;  δ3 = 0.3 + 0.09 - 0.2 = 0.19;  δ2 = 0 + 0.18 - 0.3 = -0.12
    #   δ1 = -0.2 + 0.27 - 0.4 = -0.33;  δ0 = 0.1 + 0.36 - 0.5 = -0.04
    # A_t = δ_t + 0.72 A_{t+1}:
    #   A4 = 0.9;  A3 = 0.19 + 0.648 = 0.838;  A2 = -0.12 + 0.60336 = 0.48336
    #   A1 = -0.33 + 0.3480192 = 0.0180192;  A0 = -0.04 + 0.012973824 = -0.027026176
    want = torch.tensor([[-0.027026176, 0.0180192, 0.48336, 0.838, 0.9, 0.0]])
    torch.testing.assert_close(adv, want, rtol=0, atol=1e-6)
    # returns R = A + V on the answer, 0 past it
    torch.testing.assert_close(ret, torch.tensor([[0.472973824, 0.4180192, 0.78336, 1.038, 1.0, 0.0]]),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize(("ratio", "adv", "loss", "clipped"), [
    # ε = 0.2: max(-A ρ, -A clip(ρ, 0.8, 1.2))
    (0.5, 2.0, -1.0, 0.0),   # -1.0 vs -1.6: the unclipped term
    (0.5, -2.0, 1.6, 1.0),   # 1.0 vs 1.6: clipped (the ratio fell below 0.8 on a bad token)
    (1.0, 2.0, -2.0, 0.0),
    (1.0, -2.0, 2.0, 0.0),
    (1.5, 2.0, -2.4, 1.0),   # -3.0 vs -2.4: clipped (the ratio rose above 1.2 on a good token)
    (1.5, -2.0, 3.0, 0.0),   # 3.0 vs 2.4: unclipped
])
def test_clipped_policy_loss_at_ratios_half_one_and_one_and_a_half(ratio, adv, loss, clipped):
    got, was_clipped = rollout.clipped_policy_loss(torch.tensor([ratio]), torch.tensor([adv]), 0.2)
    assert got.item() == pytest.approx(loss, abs=1e-6) and was_clipped.item() == clipped


def test_clipped_value_loss():
    # V_old = 0.5, R = 1.0, ε_v = 0.2:  V = 1.0 -> clipped V 0.7: ½ max(0, 0.09) = 0.045
    # V = 0.6 -> inside the range: ½ 0.16 = 0.08;  V = 0.0 -> clipped 0.3: ½ max(1.0, 0.49) = 0.5
    got = rollout.clipped_value_loss(torch.tensor([1.0, 0.6, 0.0]), torch.full((3,), 0.5), torch.ones(3), 0.2)
    torch.testing.assert_close(got, torch.tensor([0.045, 0.08, 0.5]), rtol=0, atol=1e-6)


def test_adaptive_kl_update_is_zieglers_formula():
    # β (1 + clip(KL/target - 1, ±0.2) n / horizon), target 6, horizon 10000, n = 8 answers
    assert ppo.adaptive_kl(0.1, 9.0, 6.0, 10000, 8) == pytest.approx(0.1 * (1 + 0.2 * 8 / 10000), rel=1e-12)
    assert ppo.adaptive_kl(0.1, 5.4, 6.0, 10000, 8) == pytest.approx(0.1 * (1 - 0.1 * 8 / 10000), rel=1e-12)
    # through a rollout: the KL of the answers (mean of their summed KL) moves β after the rewards used it
    cfg = ppo.Config(rewards=[{"function": "m:f"}], kl_coef=0.1, adaptive_kl={"target": 6.0, "horizon": 100},
                     whiten_advantages=False)
    state = rollout.State(None, [], None, [], kl_coef=0.1)
    mask = torch.ones(2, 3)
    roll = {"answer_mask": mask, "scores": torch.zeros(2), "values": torch.zeros(2, 3), "kl": torch.tensor([3.0, 4.0])}
    out = ppo.advantages(roll, torch.full((2, 3), 1.0), cfg, state)
    # KL 3.5 against 6: the error 3.5/6 - 1 = -0.42 is clipped to -0.2
    assert state.kl_coef == pytest.approx(0.1 * (1 - 0.2 * 2 / 100))
    # the rewards of this rollout used the old β: -0.1 per token, GAE with γ = 1, λ = 0.95, V = 0
    assert out["advantages"][0, 2].item() == pytest.approx(-0.1)


def test_kl_estimators():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    torch.testing.assert_close(rollout.kl_estimate(logp, ref, "k1"), torch.tensor([0.5, -1.0]))
    # k3 = e^(ref - logp) - 1 - (ref - logp): e^-0.5 - 1 + 0.5, e^1 - 1 - 1
    torch.testing.assert_close(rollout.kl_estimate(logp, ref, "k3"),
                               torch.tensor([0.10653066, 0.71828183]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the reward's position

def test_reward_is_read_at_the_last_generated_token_with_left_and_right_padding():
    end, pad = 2, 0
    # answers after a left-padded prompt: the first ends at its EOS (then right padding), the
    # second was cut by max_new_tokens, the third is EOS at once (an empty answer)
    answers = torch.tensor([[5, 7, end, pad, pad], [5, 6, 7, 8, 9], [end, pad, pad, pad, pad]])
    mask = rollout.answer_mask(answers, [end])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    r = rewards.token_rewards(torch.tensor([1.0, 2.0, 3.0]), mask)
    assert r.tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 0, 2], [3, 0, 0, 0, 0]]


def _reward_model(tmp_path, tiny_model_dir):
    """A tiny one-output sequence classifier (a reward model) saved as a plain folder."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    base = tiny_model_dir("llama")
    tok = AutoTokenizer.from_pretrained(base)
    config = AutoConfig.from_pretrained(base, num_labels=1, problem_type="regression", pad_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    return str(tmp_path / "rm")


def test_reward_model_scores_the_last_real_token_on_either_padding_side(tmp_path, tiny_model_dir):
    rm = rewards._RewardModel(_reward_model(tmp_path, tiny_model_dir), "objective.rewards.0.model", "cpu")
    texts = ["a short one", "a much longer answer than the first one, with more words"]
    alone = torch.cat([rm([t]) for t in texts])
    for side in ("left", "right"):
        rm.tokenizer.padding_side = side
        torch.testing.assert_close(rm(texts), alone, rtol=0, atol=1e-5)
    assert alone[0] != alone[1]


def test_a_classifier_with_several_outputs_is_refused_as_a_reward_model(tmp_path, tiny_model_dir):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    base = tiny_model_dir("llama")
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_config(
        AutoConfig.from_pretrained(base, num_labels=3, pad_token_id=tok.eos_token_id))
    model.save_pretrained(tmp_path / "three")
    tok.save_pretrained(tmp_path / "three")
    with pytest.raises(ConfigError, match="objective.rewards.0.model: .* has 3 outputs"):
        rewards._RewardModel(str(tmp_path / "three"), "objective.rewards.0.model", "cpu")
    with pytest.raises(ConfigError, match="objective.rewards.0.model: .* is not a classification head"):
        rewards._RewardModel(base, "objective.rewards.0.model", "cpu")


def test_scores_are_weighted_clipped_normalized_and_penalized():
    sources = [("function", lambda p, a: [1.0, 4.0, -9.0], 2.0), ("function", lambda p, a: [0.5, 0.5, 0.5], -1.0)]
    raw = rewards.score(sources, ["p"] * 3, ["a", "b", "c"], ["t"] * 3)
    torch.testing.assert_close(raw, torch.tensor([1.5, 7.5, -18.5]))
    cfg = ppo.Config(rewards=[{"function": "m:f"}], reward_clip=5.0, missing_eos_penalty=1.0, empty_answer_penalty=2.0)
    got = rewards.shape(raw, cfg, empty=torch.tensor([False, True, False]), missing_eos=torch.tensor([True, False, False]))
    torch.testing.assert_close(got, torch.tensor([1.5 - 1.0, 5.0 - 2.0, -5.0]))
    normalized = rewards.shape(torch.tensor([1.0, 2.0, 3.0]), ppo.Config(rewards=[{"function": "m:f"}],
                                                                         reward_normalize=True),
                               torch.zeros(3).bool(), torch.zeros(3).bool())
    torch.testing.assert_close(normalized, torch.tensor([-1.0, 0.0, 1.0]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- runs on a tiny model

REWARDS = '''
def zero(prompts, answers):
    return [0.0] * len(answers)

def token(prompts, answers):
    # the share of the answer's characters that are WANTED
    return [a.count(WANTED) / max(1, len(a)) for a in answers]
'''


def _run(tmp_path, model, name, objective, **train):
    rows = [{"instruction": f"Tell me about item {i}.", "input": "", "output": "ok"} for i in range(16)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": {"name": model},
            "data": {"datasets": [{"path": str(tmp_path / "prompts.jsonl")}], "template": "alpaca", "cutoff_len": 48},
            "method": {"name": "lora", "r": 4, "target_modules": "all-linear"},
            "objective": {"name": "ppo", "max_new_tokens": 6, **objective},
            "train": {"batch_size": 4, "micro_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1,
                      "mixed_precision": "fp32", "seed": 3, **train},
            "output": {"dir": str(tmp_path / "runs"), "name": name}}


def _rewards_file(tmp_path, wanted: str = "") -> str:
    path = tmp_path / "my_rewards.py"
    path.write_text(f"WANTED = {wanted!r}\n" + REWARDS)
    return str(path)


def test_zero_reward_keeps_the_kl_under_005_nats_for_20_steps(tmp_path, tiny_model_dir):
    # lr 1e-3 (LoRA r 4), whitening off, KL estimated with k3 (never negative, so a noisy estimate
    # cannot hide a drift below zero). With zero reward the advantages are the value head's noise and
    # the KL penalty; whitening such near-zero advantages would blow the noise up to unit size.
    # (At lr 1e-2 the same run drifts to 0.2-0.7 nats.)
    cfg = _run(tmp_path, tiny_model_dir("llama"), "zero",
               {"rewards": [{"function": _rewards_file(tmp_path) + ":zero"}], "kl_coef": 0.1, "kl_estimator": "k3",
                "whiten_advantages": False}, max_steps=20, micro_batch_size=4)
    result = tunewright.train(cfg)
    metrics = [m for m in read_metrics(result.run_dir) if "kl" in m]
    kls = [m["kl"] for m in metrics]
    assert len(kls) == 20 and max(kls) < 0.05, kls
    assert kls[-1] > 0  # the policy did move away from the reference (the adapter is on)
    assert all(m["reward"] == 0 for m in metrics)


def _frequency(folder, tokenizer, token: int, n: int = 64) -> float:
    """Share of `token` among the answer tokens of `n` sampled answers (seed 0, raw prompts)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tokenizer([f"Tell me about item {i}." for i in range(n)], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**ids, do_sample=True, top_k=0, max_new_tokens=6, pad_token_id=tokenizer.pad_token_id)
    return float((out[:, ids["input_ids"].shape[1]:] == token).float().mean())


def test_with_kl_coef_0_a_rewarded_token_becomes_more_frequent(tmp_path):
    from transformers import AutoTokenizer

    from tunewright.lab.tiny import make_tiny_model

    # weights of std 0.5: the tiny model's logits are large enough that token 300 is sampled now and
    # then (about 2% of answer tokens); at the default 0.02 every token is about 1/2000 and a reward
    # on one of them is almost never seen
    model = str(make_tiny_model(tmp_path / "tiny", "llama", initializer_range=0.5))
    token = 300
    (tmp_path / "token_reward.py").write_text(
        "from transformers import AutoTokenizer\n"
        f"TOK = AutoTokenizer.from_pretrained({model!r})\n"
        "def count(prompts, answers):\n"
        f"    return [TOK(a, add_special_tokens=False)['input_ids'].count({token}) for a in answers]\n")
    cfg = _run(tmp_path, model, "token", {"rewards": [{"function": str(tmp_path / "token_reward.py") + ":count"}],
                                          "kl_coef": 0.0, "ppo_epochs": 4},
               max_steps=20, learning_rate=3e-2, batch_size=8, micro_batch_size=8)
    cfg["method"] = {"name": "full"}
    result = tunewright.train(cfg)
    tok = AutoTokenizer.from_pretrained(model)
    tok.pad_token, tok.padding_side = tok.eos_token, "left"
    before, after = _frequency(model, tok, token), _frequency(result.final_dir, tok, token)
    assert before < 0.05 and after > before + 0.1, (before, after)


def test_resume_inside_a_rollout_is_bit_exact(tmp_path, tiny_model_dir):
    # rollouts of 4 steps (2 epochs x 2 minibatches): the checkpoint at step 3 is mid-rollout, so
    # the resumed run must take the saved buffer (ids, log-probs, values, advantages) and order
    model = tiny_model_dir("llama")
    objective = {"rewards": [{"function": _rewards_file(tmp_path, "e") + ":token"}], "ppo_epochs": 2, "minibatches": 2,
                 "adaptive_kl": {"target": 0.01, "horizon": 50}}
    whole_cfg = _run(tmp_path, model, "whole", objective, max_steps=6)
    whole_cfg["output"]["save_steps"] = 3
    whole = tunewright.train(whole_cfg)
    assert (whole.run_dir / "checkpoints" / "step-3" / "objective" / "rollout.safetensors").is_file()
    cut = tmp_path / "runs" / "cut"
    shutil.copytree(whole.run_dir, cut)
    shutil.rmtree(cut / "final")
    shutil.rmtree(cut / "checkpoints" / "step-6")
    resumed_cfg = _run(tmp_path, model, "cut", objective, max_steps=6, resume=str(cut / "checkpoints" / "step-3"))
    resumed_cfg["output"]["save_steps"] = 3
    resumed = tunewright.train(resumed_cfg)
    a, b = load_file(whole.final_dir / "adapter_model.safetensors"), load_file(resumed.final_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state_a = load_file(whole.run_dir / "checkpoints" / "step-6" / "objective" / "rollout.safetensors")
    state_b = load_file(cut / "checkpoints" / "step-6" / "objective" / "rollout.safetensors")
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)  # value head, buffer, adaptive β
    at_3 = load_file(cut / "checkpoints" / "step-3" / "objective" / "rollout.safetensors")
    assert not torch.equal(at_3["value_head.weight"], state_a["value_head.weight"])  # the value head trains
    assert at_3["kl_coef"].item() != state_a["kl_coef"].item()  # and β adapts
    strip = lambda rows: [{k: v for k, v in m.items() if k not in ("step_time", "tokens_per_s")} for m in rows]  # noqa: E731
    assert strip(read_metrics(resumed.run_dir)) == strip(read_metrics(whole.run_dir))


# ---------------------------------------------------------------- config

def test_rollout_size_is_checked_against_the_batch(tmp_path):
    raw = {"model": {"name": "m"}, "data": {"datasets": [{"path": "x.jsonl"}]},
           "objective": {"name": "ppo", "rewards": [{"function": "m:f"}], "minibatches": 4},
           "train": {"batch_size": 4, "micro_batch_size": 2}}
    with pytest.raises(ConfigError, match="objective.minibatches: a rollout is train.batch_size"):
        load_config(raw=raw)
    with pytest.raises(ConfigError, match="eval.steps: objective 'ppo' has no held-out loss"):
        load_config(raw={**raw, "objective": {**raw["objective"], "minibatches": 2}, "eval": {"steps": 5}})
    with pytest.raises(ConfigError, match="give exactly one of function or model"):
        load_config(raw={**raw, "objective": {"name": "ppo", "rewards": [{"function": "m:f", "model": "r"}]}})


def test_answer_log_probs_do_not_depend_on_the_prompts_padding(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32)
    cfg = ppo.Config(rewards=[{"function": "m:f"}], temperature=0.7)
    prompt, answer = [1, 40, 41, 42, 43], [50, 51, 2]

    def stats(pad: int):
        ids = torch.tensor([[0] * pad + prompt + answer])
        mask = torch.tensor([[0] * pad + [1] * (len(prompt) + len(answer))])
        return rollout.token_stats(model, {"input_ids": ids, "attention_mask": mask,
                                           "answer_mask": torch.ones(1, len(answer))}, cfg)[0]

    alone = stats(0)
    torch.testing.assert_close(stats(3), alone, rtol=0, atol=1e-5)  # left padding, as generate pads prompts
    # against a plain forward at temperature 0.7: log softmax(logits / 0.7) at the answer tokens
    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:-1] / 0.7
    want = torch.log_softmax(logits, -1).gather(1, torch.tensor(answer)[:, None]).squeeze(1)
    torch.testing.assert_close(alone[0], want, rtol=0, atol=1e-5)
