"""`tunewright eval` beyond generation: the config's `task` runs label scoring, the multiple-choice
harness and a classification head from the command line, with the same results.json, outputs and
report as generation, and numbers equal to the Python functions (and scikit-learn) on the same rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tunewright.cli import main
from tunewright.config import ModelConfig
from tunewright.models.load import load_model, load_tokenizer


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _eval(tmp_path, capsys, config: dict, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**config, "output": {"dir": str(tmp_path / "out"), "name": name}}))
    rc = main(["eval", str(path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = tmp_path / "out" / name
    return json.loads((out / "results.json").read_text()), out


QUESTIONS = [{"instruction": f"Is {n} an even number? Answer Yes or No.", "output": "Yes" if n % 2 == 0 else "No"}
             for n in range(7)]


def test_score_task_equals_label_scoring_in_python(tiny_model_dir, tmp_path, capsys):
    from tunewright.eval.scoring import score_classification

    data = _jsonl(tmp_path / "q.jsonl", QUESTIONS)
    model = tiny_model_dir("llama")
    results, out = _eval(tmp_path, capsys, {"candidates": [{"name": "base", "model": model, "template": "alpaca"}],
                                            "data": {"path": str(data)}, "task": "score", "labels": ["No", "Yes"]},
                         "scored")
    from tunewright.data.templates import prepare_tokenizer, resolve_template
    tokenizer = load_tokenizer(ModelConfig(name=model))
    template = resolve_template("alpaca", tokenizer)
    prepare_tokenizer(tokenizer, template)
    direct = score_classification(load_model(ModelConfig(name=model)), tokenizer, [q["instruction"] for q in QUESTIONS],
                                  ["No", "Yes"], [q["output"] for q in QUESTIONS], template=template)
    scores = results["candidates"][0]["scores"]
    assert results["task"] == "score" and set(scores) == {"accuracy", "macro_f1", "auc"}
    for key in scores:
        assert scores[key] == pytest.approx(direct[key], abs=1e-6)
    rows = [json.loads(line) for line in (out / "outputs-base.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and all(r["output"] in ("No", "Yes") for r in rows)
    assert all(r["scores"]["p_No"] + r["scores"]["p_Yes"] == pytest.approx(1.0) for r in rows)
    assert "label scoring: P(label | prompt) over ['No', 'Yes']" in (out / "report.md").read_text()
    assert (out / "metrics.png").is_file()


MC = [{"question": "Which is a colour?", "choices": ["red", "table", "seven"], "answer": 0, "subject": "words"},
      {"question": "Which is a number?", "choices": ["blue", "nine", "chair"], "answer": "B", "subject": "words"},
      {"question": "What is 2 + 2?", "choices": ["three", "five", "four"], "answer": 2, "subject": "math"}]


def test_multiple_choice_task_equals_the_harness(tiny_model_dir, tmp_path, capsys):
    from tunewright.eval.multiple_choice import evaluate_multiple_choice

    data = _jsonl(tmp_path / "mc.jsonl", MC)
    model = tiny_model_dir("llama")
    settings = {"k_shot": 1, "mode": "cloze", "normalize": "bytes"}
    results, out = _eval(tmp_path, capsys, {"candidates": [{"name": "base", "model": model}],
                                            "data": {"path": str(data)}, "task": "multiple_choice",
                                            "multiple_choice": settings}, "mc")
    direct = evaluate_multiple_choice(load_model(ModelConfig(name=model)), load_tokenizer(ModelConfig(name=model)),
                                      str(data), **settings)
    scores = results["candidates"][0]["scores"]
    assert scores["accuracy"] == pytest.approx(direct["accuracy"])
    assert scores["accuracy_math"] == pytest.approx(direct["per_subject"]["math"]["accuracy"])
    rows = [json.loads(line) for line in (out / "outputs-base.jsonl").read_text().splitlines()]
    assert [r["scores"]["correct"] for r in rows] == [float(e["predicted"] == e["answer"]) for e in direct["per_example"]]
    assert rows[2]["reference"] == "C. four"


def test_classify_task_scores_a_classifier_folder_like_scikit_learn(tiny_model_dir, tmp_path, capsys):
    from sklearn.metrics import accuracy_score, roc_auc_score
    from transformers import AutoModelForSequenceClassification

    from tunewright.objectives import classification

    # a plain transformers classifier folder (what `tunewright merge` writes for a classification run)
    tokenizer = load_tokenizer(ModelConfig(name=tiny_model_dir("llama")))
    classification.prepare_tokenizer(tokenizer)
    torch.manual_seed(3)
    clf = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir("llama"), id2label={0: "neg", 1: "pos"})
    clf.resize_token_embeddings(len(tokenizer))
    clf.config.pad_token_id = tokenizer.pad_token_id
    clf.save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    rows = [{"text": t, "label": lab} for t, lab in [("fine", "pos"), ("awful and flimsy", "neg"), ("great", "pos"),
                                                     ("poor value", "neg"), ("a solid build", "pos")]]
    data = _jsonl(tmp_path / "c.jsonl", rows)
    results, _ = _eval(tmp_path, capsys, {"candidates": [{"name": "head", "model": str(tmp_path / "clf")}],
                                          "data": {"path": str(data), "format": "classification"}, "task": "classify"},
                       "classified")
    with torch.no_grad():
        probs = [clf.eval()(**tokenizer(r["text"], return_tensors="pt")).logits.softmax(-1)[0, 1].item() for r in rows]
    truth = [int(r["label"] == "pos") for r in rows]
    scores = results["candidates"][0]["scores"]
    assert scores["auc"] == pytest.approx(roc_auc_score(truth, probs), abs=1e-6)
    assert scores["accuracy"] == pytest.approx(accuracy_score(truth, [int(p >= 0.5) for p in probs]))


@pytest.mark.parametrize("extra, message", [
    ({"task": "score"}, "labels: task score needs the labels to score"),
    ({"task": "classify", "metrics": ["rouge"]}, "metrics: task 'classify' reports its own"),
    ({"task": "classify"}, "data.format: task classify reads classification or tabular rows, not 'alpaca'"),
    ({"labels": ["No", "Yes"]}, "labels: only task score reads labels"),
    ({"task": "generate", "multiple_choice": {"k_shot": 1}}, "multiple_choice: settings of task multiple_choice"),
])
def test_task_settings_that_do_not_fit_are_one_line_errors(tmp_path, capsys, extra, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"candidates": [{"name": "a", "model": "m"}], "data": {"path": "d.jsonl"}, **extra}))
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
