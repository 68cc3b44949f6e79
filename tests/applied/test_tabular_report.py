"""`tunewright report tabular --smoke`: the whole grid on the recipe's tiny model (the README's table
at full size is a recording, never a test). Each row of the table is the number its own parts give:
the baselines refitted on the files the report wrote, the LLM rows from their evaluations' outputs."""

import json

import pytest

from tunewright.applied.baselines import baseline_scores
from tunewright.applied.tabular_report import METHODS, run_tabular_report


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_smoke_grid_rows_are_what_their_parts_give(tmp_path):
    from sklearn.metrics import roc_auc_score

    out = tmp_path / "report"
    got = run_tabular_report(out, ["lab", "wine"], templates=("key_value",), smoke=True, max_test=8,
                             llm_datasets=["lab"], echo=lambda line: None)
    table = {(r["dataset"], r["method"], r["template"]): r for r in got["rows"]}
    assert set(table) == {(d, m, "") for d in ("lab", "wine") for m in ("logistic regression", "XGBoost")} | {
        ("lab", m, "key_value") for m in METHODS}
    assert (out / "report.md").read_text().count("\n| lab |") == 5

    for name in ("lab", "wine"):
        train, test = _jsonl(out / "data" / name / "train.jsonl"), _jsonl(out / "data" / name / "test.jsonl")
        assert len(test) == 8
        for method, row in (("logistic", "logistic regression"), ("xgboost", "XGBoost")):
            scores = baseline_scores(method, train, test)
            assert table[name, row, ""]["auc"] == round(scores["auc"], 3)

    truth = [r["target"] == "Yes" for r in _jsonl(out / "data" / "lab" / "test.jsonl")]
    for method, run in (("zero-shot", "zero-shot"), ("LoRA Yes/No", "yes-no")):
        outputs = _jsonl(out / "evals" / f"lab-key_value-{run}" / f"outputs-lab-key_value-{run}.jsonl")
        # the prompt is the row as key: value lines and the question; the target's value is not in it
        assert all("target" not in o["prompt"][-1]["content"] for o in outputs)
        assert outputs[0]["prompt"][-1]["content"].endswith("Answer Yes or No.")
        auc = roc_auc_score(truth, [o["scores"]["p_Yes"] for o in outputs])
        assert table["lab", method, "key_value"]["auc"] == round(auc, 3)
    # the LoRA head's classes came from the rows (No, Yes: AUC is of Yes); merge puts them in config.json
    head = json.loads((out / "runs" / "lab-key_value-head" / "final" / "tunewright.json").read_text())
    assert head["model_config"]["id2label"] == {"0": "No", "1": "Yes"}
    assert got["wall_seconds"] > 0 and "load average" in got["load_before"]


@pytest.mark.parametrize("args, message", [
    (["tabular", "--llm-datasets", "labb"], "unknown tabular dataset 'labb' (did you mean \"lab\"?)"),
    (["recommender", "--rows", "96,x,40"], "--rows: expected three counts of at least 2, train,validation,test"),
])
def test_report_options_fail_in_one_line_before_any_work(tmp_path, capsys, args, message):
    from tunewright.cli import main

    assert main(["report", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
