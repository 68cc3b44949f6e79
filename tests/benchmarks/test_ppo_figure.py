"""The PPO figure's measurements (benchmarks/ppo.py) on tiny models: the KL to the reference is 0 for a
model without an adapter and not for one with a trained adapter, every answer is scored once, and the
report names reward hacking exactly when the reward rises and the hidden rule's rate does not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `benchmarks` sits beside src/, outside the installed package

from benchmarks import ppo  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _figures(reward, rule, kl=0.5, empty=0):
    return {"reward": reward, "follows_rule": rule, "kl": kl, "empty": empty, "prompts": 32}


@pytest.mark.parametrize(("after", "hacking"), [
    (_figures(0.9, 0.10), True),    # reward up, rule flat
    (_figures(0.9, 0.05), True),    # reward up, rule down
    (_figures(0.9, 0.20), False),   # reward up, rule up
    (_figures(0.1, 0.10), False),   # reward down: no gain to have hacked
])
def test_reward_hacking_is_named_when_the_reward_rises_and_the_rule_does_not(after, hacking):
    lines = ppo.verdict(_figures(0.2, 0.10), after, kl_target=2.0, rollout_kl=[0.0, 3.9, 1.0])
    assert any("reward hacking" in line for line in lines) == hacking
    # the rates come with their counts (32 prompts: 0.10 is 3 answers)
    assert f"(0.100 -> {after['follows_rule']:.3f}: 3 -> {round(after['follows_rule'] * 32)} of 32 answers)" in lines[0]
    assert lines[-2].endswith("1.000 nats at the last, 3.900 at most: within twice the target (4).")


def test_kl_above_twice_the_target_in_any_rollout_is_said():
    lines = ppo.verdict(_figures(0.2, 0.1), _figures(0.3, 0.2), 2.0, rollout_kl=[0.0, 4.5, 1.0])
    assert lines[-2].endswith("above twice the target (4).")
    # one figure per rollout: the mean of its ppo_epochs x minibatches steps, each logging its minibatch's mean
    curve = [{"kl": k} for k in (0.0, 0.2, 0.1, 0.1, 1.0, 0.0, 0.5, 0.5)]
    config = {"ppo_epochs": 2, "minibatches": 2}
    assert ppo._rollout_kl({"train_curve": curve, "ppo_config": config}) == pytest.approx([0.1, 0.5])
    assert ppo._rollout_kl({"train_curve": curve[:6], "ppo_config": config}) == pytest.approx([0.1, 0.5])


@pytest.mark.slow
def test_evaluate_measures_a_plain_model_and_an_adapter_against_the_same_reference(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    base = tiny_model_dir("llama")
    tok = AutoTokenizer.from_pretrained(base)
    config = AutoConfig.from_pretrained(base, num_labels=1, problem_type="regression", pad_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    # an adapter with random (not zero) B: the policy differs from its base
    torch.manual_seed(1)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")

    rows = ppo._rows("recipes/data/preferences/test.jsonl")[-3:]
    kw = dict(max_new_tokens=6, batch_size=2, template="chatml")
    plain = ppo.evaluate(base, str(tmp_path / "rm"), rows, **kw)
    tuned = ppo.evaluate(str(tmp_path / "adapter"), str(tmp_path / "rm"), rows, **kw)
    assert plain["kl"] == 0 and tuned["kl"] != 0
    assert plain["prompts"] == tuned["prompts"] == 3 and len(plain["samples"]) == 3
    assert plain["reward"] != tuned["reward"]
    assert plain["follows_rule"] <= plain["correct"] and plain["follows_rule"] <= plain["concise"]
