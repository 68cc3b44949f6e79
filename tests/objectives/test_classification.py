"""The classification objective: its loss against the hand formula, last-real-token pooling that
padding cannot move, labels and weights from the data, and one LoRA run whose evaluation metrics,
`tunewright predict` lines and merged folder (loaded by plain transformers) all agree."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tunewright.config import DataConfig, DataSource, ModelConfig, load_config
from tunewright.data.pipeline import PreparedData
from tunewright.data.types import Encoded, Example, Message
from tunewright.errors import ConfigError, DataError
from tunewright.models.load import load_model, load_tokenizer, resize_embeddings
from tunewright.objectives import classification as cls


def _tokenizer_and_model(folder, labels=("neg", "pos"), problem="single_label"):
    tokenizer = load_tokenizer(ModelConfig(name=folder))
    new = cls.prepare_tokenizer(tokenizer)
    cfg = cls.Config(problem_type=problem, labels=None if problem == "regression" else list(labels))
    torch.manual_seed(0)
    model = load_model(ModelConfig(name=folder), cls.HEAD, cls.model_config(cfg, tokenizer))
    if new:
        resize_embeddings(model, tokenizer, new)
    return tokenizer, model.eval(), cfg


def _rows(tokenizer, texts, labels):
    data_cfg = DataConfig(datasets=[DataSource(path="x.jsonl")])
    out = []
    for i, (text, label) in enumerate(zip(texts, labels)):
        ex = Example("x.jsonl", i + 1, [Message("user", text), Message("assistant", label)])
        out.append([cls.encode(ex, tokenizer, "", data_cfg)])
    return out


TEXTS = ["a fine day", "the price is awful and the battery is poor", "ok", "great value for money, really great"]


def test_weighted_loss_is_the_hand_formula_over_rows(tiny_model_dir):
    tokenizer, model, cfg = _tokenizer_and_model(tiny_model_dir("llama"))
    cfg = cfg.model_copy(update={"class_weights": [1.0, 3.0]})
    labels = ["pos", "neg", "neg", "pos"]
    batch = cls.collate(_rows(tokenizer, TEXTS, labels), tokenizer.pad_token_id, False)
    loss, outputs = cls.loss(model, batch, cfg)
    # by hand: each text alone (no padding at all), w[y] * -log softmax(z)[y], summed over rows
    w, y = torch.tensor([1.0, 3.0]), torch.tensor([1, 0, 0, 1])
    alone = torch.stack([model(input_ids=torch.tensor([tokenizer(t)["input_ids"]])).logits[0] for t in TEXTS])
    by_hand = sum(-w[y[i]] * torch.log_softmax(alone[i], -1)[y[i]] for i in range(4))
    torch.testing.assert_close(loss, by_hand, rtol=1e-5, atol=1e-5)
    assert cls.count(batch) == 4 and outputs["targets"].tolist() == y.tolist()
    # the loop divides by the rows (sum w CE / N): PyTorch's weighted mean divides by sum w[y] instead
    assert not math.isclose(float(loss.detach()) / 4, float(F.cross_entropy(alone, y, weight=w)), rel_tol=1e-3)
    # so two micro-batches of two rows give the loss of one batch of four
    halves = [cls.loss(model, cls.collate(_rows(tokenizer, TEXTS[i:i + 2], labels[i:i + 2]), tokenizer.pad_token_id,
                                          False), cfg)[0] for i in (0, 2)]
    torch.testing.assert_close(sum(halves) / 4, loss / 4, rtol=1e-5, atol=1e-6)


def test_multi_label_and_regression_losses_by_hand(tiny_model_dir):
    tokenizer, model, cfg = _tokenizer_and_model(tiny_model_dir("llama"), labels=("a", "b", "c"), problem="multi_label")
    batch = cls.collate(_rows(tokenizer, TEXTS[:2], ["a, c", "b"]), tokenizer.pad_token_id, False)
    loss, _ = cls.loss(model, batch, cfg)
    z = torch.stack([model(input_ids=torch.tensor([tokenizer(t)["input_ids"]])).logits[0] for t in TEXTS[:2]])
    hot = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    by_hand = sum(-(hot[i] * F.logsigmoid(z[i]) + (1 - hot[i]) * F.logsigmoid(-z[i])).mean() for i in range(2))
    torch.testing.assert_close(loss, by_hand, rtol=1e-5, atol=1e-5)

    tokenizer, model, cfg = _tokenizer_and_model(tiny_model_dir("llama"), problem="regression")
    batch = cls.collate(_rows(tokenizer, TEXTS[:2], ["2.5", "-1"]), tokenizer.pad_token_id, False)
    loss, _ = cls.loss(model, batch, cfg)
    z = [model(input_ids=torch.tensor([tokenizer(t)["input_ids"]])).logits[0, 0] for t in TEXTS[:2]]
    torch.testing.assert_close(loss, (z[0] - 2.5) ** 2 + (z[1] + 1) ** 2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_a_text_alone_and_in_a_padded_batch_get_the_same_logits(tiny_model_dir, arch):
    tokenizer, model, cfg = _tokenizer_and_model(tiny_model_dir(arch))
    texts = list(TEXTS)
    if tokenizer.eos_token:  # a text ending in EOS: the head must read it, not the token before
        texts[2] = "ok" + tokenizer.eos_token
        assert tokenizer(texts[2])["input_ids"][-1] == tokenizer.eos_token_id != tokenizer.pad_token_id
    rows = _rows(tokenizer, texts, ["pos"] * 4)
    batched = cls.classifier_logits(model, cls.collate(rows, tokenizer.pad_token_id, False))
    for i, row in enumerate(rows):
        alone = cls.classifier_logits(model, cls.collate([row], tokenizer.pad_token_id, False))
        torch.testing.assert_close(batched[i], alone[0], rtol=1e-5, atol=1e-5)
    if arch == "llama":  # plain transformers pools the same token once the pad token is a dedicated one
        plain = model(**{k: v for k, v in cls.collate(rows, tokenizer.pad_token_id, False).items()
                         if k in ("input_ids", "attention_mask")}).logits
        torch.testing.assert_close(batched, plain, rtol=1e-5, atol=1e-5)


def test_bert_pairs_carry_segment_ids(tiny_model_dir):
    tokenizer, model, cfg = _tokenizer_and_model(tiny_model_dir("bert"))
    ex = Example("x.jsonl", 1, [Message("user", "a premise", context="a hypothesis"), Message("assistant", "pos")])
    enc = cls.encode(ex, tokenizer, "", DataConfig(datasets=[DataSource(path="x.jsonl")]))
    batch = cls.collate([[enc]], tokenizer.pad_token_id, False)
    want = tokenizer("a premise", "a hypothesis")
    assert enc.input_ids == want["input_ids"] and batch["token_type_ids"][0].tolist() == want["token_type_ids"]
    assert enc.input_ids[0] == tokenizer.cls_token_id


def _prepared(train_labels, eval_labels=()):
    enc = lambda i, label: Encoded([1, 2], [], "d.jsonl", i, {"label": label})  # noqa: E731
    return PreparedData([enc(i + 1, lab) for i, lab in enumerate(train_labels)],
                        [enc(100 + i, lab) for i, lab in enumerate(eval_labels)])


def test_labels_and_auto_weights_come_from_the_training_rows():
    got = cls.fit_data(cls.Config(class_weights="auto"), _prepared(["b", "a", "a", "a"], ["b"]))
    assert got.labels == ["a", "b"] and got.class_weights == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    with pytest.raises(DataError, match=r"d.jsonl:101: label: 'c' is not one of the classes \['a', 'b'\]"):
        cls.fit_data(cls.Config(), _prepared(["a", "b"], ["a", "c"]))
    with pytest.raises(DataError, match="one class only"):
        cls.fit_data(cls.Config(), _prepared(["a", "a"]))
    with pytest.raises(DataError, match="d.jsonl:2: label: 'x' is not a number"):
        cls.fit_data(cls.Config(problem_type="regression"), _prepared(["1.5", "x"]))


def test_config_refuses_what_cannot_apply(tmp_path):
    base = {"data": {"datasets": [{"path": "x.jsonl", "format": "classification"}]}, "objective": {"name": "classification"}}
    with pytest.raises(ConfigError, match="data.packing: not possible with objective 'classification'"):
        load_config(raw={**base, "data": {**base["data"], "packing": True}})
    with pytest.raises(ConfigError, match="data.template: not used by objective 'classification'"):
        load_config(raw={**base, "data": {**base["data"], "template": "chatml"}})
    with pytest.raises(ConfigError, match="is not read by objective 'classification'"):
        load_config(raw={**base, "data": {"datasets": [{"path": "x.jsonl", "format": "alpaca"}]}})
    with pytest.raises(ConfigError, match="do not apply to problem_type: regression"):
        load_config(raw={**base, "objective": {"name": "classification", "problem_type": "regression",
                                               "class_weights": "auto"}})


# ---------------------------------------------------------------- one LoRA run, end to end

def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    import tunewright

    root = tmp_path_factory.mktemp("cls")
    words = {"positive": ["great", "lovely", "solid"], "negative": ["awful", "poor", "flimsy"]}
    rows = [{"text": f"The {['price', 'design', 'battery'][i % 3]} is {words[lab][i % 3]}.", "label": lab}
            for i, lab in enumerate(["positive", "negative"] * 12)]
    train, test = _write(root / "train.jsonl", rows[:16]), _write(root / "test.jsonl", rows[16:])
    result = tunewright.train({
        "model": {"name": tiny_model_dir("llama")},
        "data": {"datasets": [{"path": str(train), "format": "classification"}],
                 "eval_datasets": [{"path": str(test), "format": "classification"}], "cutoff_len": 64},
        "objective": {"name": "classification"},
        "method": {"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0},
        "train": {"batch_size": 4, "micro_batch_size": 4, "max_steps": 4, "learning_rate": 0.02},
        "eval": {"steps": 4, "best_metric": "eval_auc", "best_mode": "max"},
        "output": {"dir": str(root / "runs"), "name": "cls"}})
    return root, result, test


def test_evaluation_logs_accuracy_macro_f1_and_auc_of_the_final_weights(lora_run):
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    from tunewright.eval.predict import predict_rows

    root, result, test = lora_run
    logged = [m for m in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines()) if "eval_auc" in m]
    assert logged and logged[-1]["step"] == 4 and logged[-1]["eval_rows"] == 8
    rows = predict_rows(result.run_dir, test)  # final/ holds step 4, the step evaluated last
    truth = [int(r["reference"] == "positive") for r in rows]
    guess = [int(r["label"] == "positive") for r in rows]
    assert logged[-1]["eval_auc"] == pytest.approx(roc_auc_score(truth, [r["probabilities"]["positive"] for r in rows]),
                                                   abs=1e-6)
    assert logged[-1]["eval_accuracy"] == pytest.approx(accuracy_score(truth, guess))
    assert logged[-1]["eval_macro_f1"] == pytest.approx(f1_score(truth, guess, average="macro"))


def test_merged_head_loads_in_plain_transformers_and_predicts_like_predict(lora_run, capsys):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunewright.cli import main

    root, result, test = lora_run
    final = result.final_dir
    assert not (final / "generation_config.json").exists()  # a head model does not generate
    assert main(["predict", str(result.run_dir), "--data", str(test), "--out", str(root / "pred.jsonl")]) == 0
    predicted = [json.loads(line) for line in (root / "pred.jsonl").read_text().splitlines()]
    assert main(["merge", str(final), "--out", str(root / "merged")]) == 0
    config = json.loads((root / "merged" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and not (root / "merged" / "generation_config.json").exists()

    texts = [json.loads(line)["text"] for line in test.read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(root / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(root / "merged").eval()
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = merged(**inputs).logits.softmax(-1)
    assert [merged.config.id2label[int(i)] for i in plain.argmax(-1)] == [p["label"] for p in predicted]
    torch.testing.assert_close(plain[:, 1], torch.tensor([p["probabilities"]["positive"] for p in predicted]),
                               rtol=1e-4, atol=1e-5)

    # the head trained and was saved with the adapter: plain peft on a plain base gives the same
    base = AutoModelForSequenceClassification.from_pretrained(
        json.loads((final / "tunewright.json").read_text())["base_model"], num_labels=2)
    base.resize_token_embeddings(len(tokenizer))  # the dedicated pad token, then its id
    base.config.pad_token_id = tokenizer.pad_token_id
    with torch.no_grad():
        peft_probs = PeftModel.from_pretrained(base, final).eval()(**inputs).logits.softmax(-1)
    torch.testing.assert_close(peft_probs, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("task", ["sentiment", "topic"])
def test_lab_exports_train_as_written(task, tiny_model_dir, tmp_path):
    """`lab export --task sentiment|topic` files, unchanged, are a classification run's data: the
    classes come from their labels and the head has one output per class."""
    import tunewright
    from tunewright.lab.export import export_task

    train, validation, _ = export_task(task, tmp_path / task, seed=0, n_train=24, n_val=6, n_test=2)
    labels = sorted({json.loads(line)["label"] for line in train.read_text().splitlines()})
    assert len(labels) >= 2
    result = tunewright.train({
        "model": {"name": tiny_model_dir("llama")},
        "data": {"datasets": [{"path": str(train), "format": "classification"}],
                 "eval_datasets": [{"path": str(validation), "format": "classification"}], "cutoff_len": 96},
        "objective": {"name": "classification"},
        "method": {"name": "lora", "r": 2, "target_modules": ["q_proj"], "lora_dropout": 0.0},
        "train": {"batch_size": 4, "micro_batch_size": 4, "max_steps": 1},
        "eval": {"steps": 1},
        "output": {"dir": str(tmp_path / "runs"), "name": task}})
    saved = json.loads((result.final_dir / "tunewright.json").read_text())["model_config"]
    assert saved["id2label"] == {str(i): name for i, name in enumerate(labels)}
    logged = [m for m in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines()) if "eval_rows" in m]
    assert logged[-1]["eval_rows"] == 6 and 0 <= logged[-1]["eval_accuracy"] <= 1
