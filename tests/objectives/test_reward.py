"""The reward objective: its loss against the Bradley-Terry formula with a margin, scores that padding
on either side cannot move, 4 micro-batches of 2 pairs = one batch of 8, TRL's RewardTrainer as an
oracle, and one LoRA run whose evaluation accuracy on held-out pairs, `tunewright predict` scores and
saved head (one output, problem_type regression, read by load_classifier) all agree."""

from __future__ import annotations

import json
import math
import tempfile

import pytest
import torch

import tunewright
from tunewright.config import ModelConfig, load_config
from tunewright.errors import ConfigError
from tunewright.models.load import load_model, load_tokenizer, resize_embeddings
from tunewright.models.params import perturb_trainable
from tunewright.objectives import classification, reward
from tunewright.training.logging import read_metrics

from preference_pairs import random_pairs as _pairs  # tests/objectives/ (its conftest puts it on the path)


def _head(folder):
    """(tokenizer, a one-output head moved away from its init so scores differ by O(1))."""
    tokenizer = load_tokenizer(ModelConfig(name=folder))
    new = reward.prepare_tokenizer(tokenizer)
    torch.manual_seed(0)
    model = load_model(ModelConfig(name=folder), reward.HEAD, reward.model_config(reward.Config(), tokenizer))
    resize_embeddings(model, tokenizer, new)
    for p in model.parameters():
        p.requires_grad_(True)
    perturb_trainable(model, seed=1, scale=0.1)
    return tokenizer, model.eval()


@pytest.fixture(scope="module")
def head(tiny_model_dir):
    return _head(tiny_model_dir("llama"))


def _batch(encoded, pad_id):
    return reward.collate([[e] for e in encoded], pad_id, False)


def _alone(model, ids) -> float:
    """The head's output at the last token of one unpadded sequence, from transformers' own logits."""
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def test_loss_is_the_bradley_terry_formula_with_the_rows_margin(head):
    tokenizer, model = head
    encoded = _pairs(4, margins=True)
    with torch.no_grad():
        total, metrics = reward.loss(model, _batch(encoded, tokenizer.pad_token_id), reward.Config())
    by_hand, right = 0.0, 0
    for i, e in enumerate(encoded):
        rc = _alone(model, e.input_ids)
        rr = _alone(model, e.input_ids[:e.meta["prompt_len"]] + e.meta["rejected"])
        by_hand += -math.log(1 / (1 + math.exp(-(rc - rr - 0.25 * i))))
        right += rc > rr
    assert abs(float(total) - by_hand) < 1e-6 * max(1.0, by_hand)
    assert float(metrics["accuracy"]) == right and 0 < right < 4  # the check sees both outcomes
    assert reward.count(_batch(encoded, tokenizer.pad_token_id)) == 4


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # rotary positions, and absolute ones that left padding shifts
def test_a_sequence_scores_the_same_alone_and_in_a_padded_batch(tiny_model_dir, arch, side):
    tokenizer, model = _head(tiny_model_dir(arch))
    seqs = [e.input_ids for e in _pairs(6, seed=2)]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        cols = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[r, cols], mask[r, cols] = torch.tensor(s), 1
    assert len(set(map(len, seqs))) > 1
    with torch.no_grad():
        batched = reward.scores(model, {"input_ids": ids, "attention_mask": mask})
    alone = torch.tensor([_alone(model, s) for s in seqs])
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


def test_four_micro_batches_of_two_equal_one_batch_of_eight(head):
    tokenizer, model = head
    encoded, cfg = _pairs(8, seed=3, margins=True), reward.Config()
    with torch.no_grad():
        whole, whole_m = reward.loss(model, _batch(encoded, tokenizer.pad_token_id), cfg)
        parts = [reward.loss(model, _batch(encoded[k:k + 2], tokenizer.pad_token_id), cfg) for k in range(0, 8, 2)]
    assert abs(float(whole) - sum(float(p[0]) for p in parts)) < 1e-6 * max(1.0, float(whole))
    for name, v in whole_m.items():
        assert abs(float(v) - sum(float(p[1][name]) for p in parts)) < 1e-5, name


def test_loss_equals_trl_reward_trainer(head):
    """TRL's RewardTrainer on the very token ids (its pre-tokenized chosen_ids/rejected_ids/margin
    columns), its collator (right padding) and compute_loss; its loss is the mean over pairs."""
    trl = pytest.importorskip("trl", minversion="1.16.0")
    from datasets import Dataset

    tokenizer, model = head
    encoded = _pairs(4, seed=5, margins=True)
    rows = [{"chosen_ids": e.input_ids, "rejected_ids": e.input_ids[:e.meta["prompt_len"]] + e.meta["rejected"],
             "margin": e.meta["margin"]} for e in encoded]
    args = trl.RewardConfig(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True, bf16=False,
                            per_device_train_batch_size=4)
    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    theirs = float(trainer.compute_loss(model, batch))
    ours, _ = reward.loss(model, _batch(encoded, tokenizer.pad_token_id), reward.Config())
    assert abs(float(ours) / 4 - theirs) < 1e-5


def test_config_refuses_what_cannot_work():
    base = {"data": {"datasets": [{"path": "x.jsonl", "format": "preference"}]}, "objective": {"name": "reward"}}
    assert load_config(raw=base).objective.name == "reward"
    with pytest.raises(ConfigError, match="is not read by objective 'reward'"):
        load_config(raw={**base, "data": {"datasets": [{"path": "x.jsonl", "format": "alpaca"}]}})
    with pytest.raises(ConfigError, match="data.packing: not possible with objective 'reward'"):
        load_config(raw={**base, "data": {**base["data"], "packing": True}})


# ---------------------------------------------------------------- one LoRA run, end to end

def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("rm")
    rows = [{"prompt": f"What is {i} plus {i}?", "chosen": str(2 * i),
             "rejected": f"Great question! The answer is {2 * i + i % 3 - 1}. I hope this helps."} for i in range(20)]
    train, test = _write(root / "train.jsonl", rows[:12]), _write(root / "test.jsonl", rows[12:])
    result = tunewright.train({
        "model": {"name": tiny_model_dir("llama")},
        "data": {"datasets": [{"path": str(train), "format": "preference"}],
                 "eval_datasets": [{"path": str(test), "format": "preference"}], "cutoff_len": 64,
                 "template": "chatml"},
        "objective": {"name": "reward"},
        "method": {"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0},
        "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 3, "learning_rate": 0.02},
        "eval": {"steps": 3},
        "output": {"dir": str(root / "runs"), "name": "rm"}})
    return root, result, test


def test_evaluation_accuracy_and_predict_scores_agree(lora_run):
    """eval_accuracy and eval_margins at the last step are what the saved head's `predict` scores
    give on the same held-out pairs; predict writes one line per row."""
    from tunewright.cli import main
    from tunewright.eval.predict import load_classifier

    root, result, test = lora_run
    logged = [m for m in read_metrics(result.run_dir) if "eval_accuracy" in m]
    assert logged and logged[-1]["step"] == 3
    assert main(["predict", str(result.run_dir), "--data", str(test), "--out", str(root / "scores.jsonl")]) == 0
    scored = [json.loads(line) for line in (root / "scores.jsonl").read_text().splitlines()]
    assert [s["line"] for s in scored] == list(range(1, 9)) and all(set(s) == {"line", "chosen", "rejected"}
                                                                   for s in scored)
    accuracy = sum(s["chosen"] > s["rejected"] for s in scored) / len(scored)
    assert logged[-1]["eval_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert logged[-1]["eval_margins"] == pytest.approx(
        sum(s["chosen"] - s["rejected"] for s in scored) / len(scored), abs=1e-5)
    model, _ = load_classifier(result.run_dir)  # what PPO will load: a one-output regression head
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    assert classification.HEAD == reward.HEAD
