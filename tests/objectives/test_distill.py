"""Distillation: the loss and its gradient equal the hand formula (forward and reverse KL, any
logits), the chunked path equals full logits on two tiny models without ever projecting more than a
chunk, and a run with a teacher folder trains and logs both parts."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tunewright.config import load_config
from tunewright.errors import ConfigError
from tunewright.objectives import causal_lm, distill
from tunewright.objectives.reference import frozen


def _by_hand(s, t, temperature, kl):
    p = torch.softmax(t / temperature, -1)
    q = torch.softmax(s / temperature, -1)
    pair = (p, q) if kl == "forward" else (q, p)
    return (pair[0] * (pair[0].log() - pair[1].log())).sum(-1) * temperature ** 2


@pytest.mark.parametrize("kl", ["forward", "reverse"])
@pytest.mark.parametrize("width", [3, 50])  # a classifier's old classes (LwF) or a vocabulary
def test_distillation_loss_and_gradient_are_the_hand_formula(kl, width):
    g = torch.Generator().manual_seed(width)
    student = torch.randn(6, width, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(6, width, generator=g, dtype=torch.float64)
    ours = distill.distillation_loss(student, teacher, 2.5, kl)
    ours.sum().backward()
    ours_grad = student.grad.clone()
    student.grad = None
    hand = _by_hand(student, teacher, 2.5, kl)
    hand.sum().backward()
    torch.testing.assert_close(ours.double(), hand.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_grad, student.grad, rtol=1e-4, atol=1e-6)
    assert float(distill.distillation_loss(teacher, teacher, 2.5, kl).abs().max()) < 1e-6  # KL(p || p) = 0


def _models(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32)
    torch.manual_seed(1)
    teacher = AutoModelForCausalLM.from_config(student.config)  # another model, the same vocabulary
    return student, teacher


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 400, (3, 15), generator=g)
    labels = ids.clone()
    labels[0, :5] = -100
    labels[2, 9:] = -100
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@pytest.mark.parametrize("kl", ["forward", "reverse"])
def test_chunked_loss_and_grads_equal_full_logits(tiny_model_dir, kl):
    student, teacher = _models(tiny_model_dir)
    batch = _batch()
    cfg = distill.Config(teacher="x", temperature=2.0, alpha=0.3, kl_direction=kl, chunk_size=4)
    ours, metrics = distill.loss(student, batch, cfg, frozen(teacher))
    ours.backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters()}
    student.zero_grad()

    keep = batch["labels"][:, 1:] != -100
    s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][keep]
    with torch.no_grad():
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][keep]
    soft = _by_hand(s, t, 2.0, kl).sum()
    hard = F.cross_entropy(s, batch["labels"][:, 1:][keep], reduction="sum")
    full = 0.3 * soft + 0.7 * hard
    full.backward()
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metrics["kl"], soft.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metrics["ce"], hard.detach(), rtol=1e-5, atol=1e-5)
    for n, p in student.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)
    assert not any(p.grad is not None for p in teacher.parameters())  # the teacher stays frozen


def test_neither_model_projects_more_than_a_chunk(tiny_model_dir, monkeypatch):
    student, teacher = _models(tiny_model_dir)
    heads = {id(student.get_output_embeddings().weight): [], id(teacher.get_output_embeddings().weight): []}
    real = F.linear

    def spy(x, weight, bias=None):
        if id(weight) in heads:
            heads[id(weight)].append(x.shape[:-1].numel())
        return real(x, weight, bias)

    monkeypatch.setattr(F, "linear", spy)
    batch = _batch()
    loss, _ = distill.loss(student, batch, distill.Config(teacher="x", chunk_size=5), frozen(teacher))
    loss.backward()
    for rows in heads.values():  # first call: the outer forward's one position per row (logits_to_keep=1)
        assert rows[0] == 3 and max(rows[1:]) <= 5
    # the student's chunks are projected again in backward (recomputed, not kept)
    assert sum(heads[id(student.get_output_embeddings().weight)][1:]) == 2 * causal_lm.count(batch)


def test_a_run_distils_a_teacher_folder(tiny_model_dir, tmp_path):
    import tunewright

    rows = [{"instruction": f"Count to {i % 5 + 1}.", "output": " ".join("one two three four five".split()[:i % 5 + 1])}
            for i in range(16)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = tunewright.train({
        "model": {"name": tiny_model_dir("llama")},
        "data": {"datasets": [{"path": str(data)}], "template": "alpaca", "cutoff_len": 64},
        "objective": {"name": "distill", "teacher": tiny_model_dir("llama"), "alpha": 0.5, "chunk_size": 16},
        "method": {"name": "lora", "r": 4, "lora_dropout": 0.0},
        "train": {"batch_size": 4, "micro_batch_size": 4, "max_steps": 4, "learning_rate": 1e-2},
        "output": {"dir": str(tmp_path / "runs"), "name": "kd"}})
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in logged if "kl" in m]
    assert len(steps) == 4
    # the teacher is the student's own starting model: the soft term starts at 0 and the loss is its mix
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    for m in steps:
        assert m["loss"] == pytest.approx(0.5 * m["kl"] + 0.5 * m["ce"], rel=1e-5)
    with pytest.raises(ConfigError, match="objective.teacher: distill needs a teacher"):
        load_config(raw={"data": {"datasets": [{"path": "x"}]}, "objective": {"name": "distill"}})
