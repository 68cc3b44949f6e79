"""The lwf objective: its loss against the hand formula (cross-entropy over every class plus
λ·T²·KL(teacher || student) over the old classes only, matched by name between the two heads), a
per-row sum so 4 micro-batches of 2 give one batch of 8, and what the config refuses. Its place
in a sequence (the previous task's final/ as teacher) is tested in tests/continual/."""

from __future__ import annotations

import pytest
import torch

from tunewright.config import DataConfig, DataSource, ModelConfig
from tunewright.data.types import Example, Message
from tunewright.errors import ConfigError
from tunewright.models.load import load_model, load_tokenizer, resize_embeddings
from tunewright.objectives import classification as cls, lwf
from tunewright.objectives.reference import frozen

LABELS = ["neg", "pos", "sport", "sci"]
TEXTS = ["a fine day", "the price is awful", "ok", "great value", "ball and goal", "the atom", "team", "a cell"]
TARGETS = ["pos", "neg", "neg", "pos", "sport", "sci", "sport", "sci"]


def _head_model(folder, tokenizer, labels, seed):
    torch.manual_seed(seed)
    model = load_model(ModelConfig(name=folder), cls.HEAD,
                       cls.model_config(cls.Config(labels=list(labels)), tokenizer))
    resize_embeddings(model, tokenizer, [tokenizer.pad_token_id])
    return model.eval()


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    """(tokenizer, student, lwf state): the teacher's head lists the classes in another order."""
    folder = tiny_model_dir("llama")
    tokenizer = load_tokenizer(ModelConfig(name=folder))
    assert cls.prepare_tokenizer(tokenizer)
    student = _head_model(folder, tokenizer, LABELS, 0)
    teacher = _head_model(folder, tokenizer, ["sci", "pos", "sport", "neg"], 1)
    state = lwf.Teacher(frozen(teacher), [0, 1], [3, 1])  # neg, pos in each head
    return tokenizer, student, teacher, state


def _batch(tokenizer, rows):
    data_cfg = DataConfig(datasets=[DataSource(path="x.jsonl")])
    encoded = [[cls.encode(Example("x.jsonl", i + 1, [Message("user", TEXTS[i]), Message("assistant", TARGETS[i])]),
                           tokenizer, "", data_cfg)] for i in rows]
    return cls.collate(encoded, tokenizer.pad_token_id, False)


def _config(**changes):
    return lwf.Config(**{"labels": LABELS, "teacher": "unused", "old_labels": ["neg", "pos"], **changes})


def test_loss_is_cross_entropy_plus_the_old_classes_distilled_by_hand(pair):
    tokenizer, student, teacher, state = pair
    cfg = _config(weight=0.7, temperature=3.0)
    batch = _batch(tokenizer, range(8))
    loss, metrics = lwf.loss(student, batch, cfg, state)
    total = 0.0
    for i, text in enumerate(TEXTS):  # each text alone, in float64, written out
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            z, zt = student(input_ids=ids).logits[0].double(), teacher(input_ids=ids).logits[0].double()
        y = LABELS.index(TARGETS[i])
        ce = -(z[y] - torch.log(torch.exp(z).sum()))
        old, teacher_old = z[[0, 1]] / 3.0, zt[[3, 1]] / 3.0  # neg, pos: the student's 0, 1; the teacher's 3, 1
        p = torch.exp(teacher_old) / torch.exp(teacher_old).sum()
        q = torch.exp(old) / torch.exp(old).sum()
        total += float(ce) + 0.7 * 9.0 * float((p * (torch.log(p) - torch.log(q))).sum())
    assert float(loss.detach()) / 8 == pytest.approx(total / 8, abs=1e-6)  # the per-row mean the loop divides to
    assert float(metrics["ce"] + metrics["kd"]) == pytest.approx(float(loss.detach()), rel=1e-6)
    assert float(metrics["kd"]) > 1e-3  # two different models: the distillation term has work to do


def test_four_micro_batches_of_two_give_one_batch_of_eight(pair):
    """Both terms are sums over rows and the loop divides by the rows of the accumulated batch: the
    loss and its gradient of 4 x 2 rows equal those of 1 x 8."""
    tokenizer, student, _, state = pair
    cfg = _config(weight=2.0)
    params = [p for p in student.parameters() if p.requires_grad]
    whole, _ = lwf.loss(student, _batch(tokenizer, range(8)), cfg, state)
    grad_whole = torch.autograd.grad(whole / 8, params)
    parts = [lwf.loss(student, _batch(tokenizer, range(i, i + 2)), cfg, state)[0] / 8 for i in range(0, 8, 2)]
    grad_parts = torch.autograd.grad(sum(parts), params)
    assert float(sum(parts).detach()) == pytest.approx(float(whole.detach() / 8), abs=1e-6)
    for a, b in zip(grad_whole, grad_parts):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_weight_zero_is_the_classification_loss(pair):
    tokenizer, student, _, state = pair
    batch = _batch(tokenizer, range(4))
    loss, _ = lwf.loss(student, batch, _config(weight=0.0), state)
    assert float(loss.detach()) == pytest.approx(float(cls.loss(student, batch, cls.Config(labels=LABELS))[0].detach()),
                                                rel=1e-6)


@pytest.mark.parametrize("changes, message", [
    ({"old_labels": ["neg", "happy"]}, "objective.old_labels: 'happy' is not one of objective.labels"),
    ({"problem_type": "multi_label"}, "lwf distils a softmax over classes: single_label only"),
])
def test_config_refuses_what_cannot_work(changes, message):
    with pytest.raises(ValueError, match=message):
        _config(**changes)


def test_a_run_without_a_teacher_is_refused(tmp_path):
    from tunewright.config import parse_config

    data = tmp_path / "x.jsonl"
    data.write_text('{"text": "a", "label": "neg"}\n')
    raw = {"model": {"name": "m"}, "objective": {"name": "lwf", "labels": LABELS, "old_labels": ["neg", "pos"]},
           "data": {"datasets": [{"path": str(data), "format": "classification"}]}}
    with pytest.raises(ConfigError, match="<t>: objective.teacher: lwf needs a teacher"):
        parse_config(raw, "<t>")
