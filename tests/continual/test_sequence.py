"""A task sequence: each task a run of run.py in runs/<name>/<strategy>/<i>-<task>/, starting from
the previous task's final/; R scored per scenario (checked against `tunewright predict`'s
probabilities); each strategy's changes to a task's run config."""

from __future__ import annotations

import json

import pytest
import yaml

from tunewright.continual import replay
from tunewright.continual.config import load_continual_config
from tunewright.continual.sequence import run_sequence, score_row, task_run_config
from tunewright.continual.strategies import STRATEGIES, TaskContext


def test_a_naive_sequence_trains_each_task_through_the_run_and_scores_r(sequence_raw, tiny_model_dir, tmp_path):
    from tunewright.eval.predict import load_classifier, predict_rows

    cfg = load_continual_config(raw=sequence_raw(model={"name": tiny_model_dir("llama")}))
    result = run_sequence(cfg, "naive", say=lambda *a: None)

    folder = tmp_path / "runs" / "seq" / "naive"
    assert sorted(p.name for p in folder.iterdir()) == ["0-sentiment", "1-topics", "sequence.json"]
    second = yaml.safe_load((folder / "1-topics" / "config.yaml").read_text())
    assert second["model"]["name"] == str(folder / "0-sentiment" / "final")  # full: the weights go on
    assert second["objective"]["labels"] == ["neg", "pos", "sport", "sci"]  # one head over the union
    assert len(result["R"]) == 2 and all(len(row) == 2 for row in result["R"]) and len(result["zero_shot"]) == 2
    assert json.loads((folder / "sequence.json").read_text())["R"] == result["R"]
    assert result["backward_transfer"] == pytest.approx(result["R"][1][0] - result["R"][0][0])

    # R's last row from `tunewright predict`'s probabilities: class-incremental takes the argmax over
    # every class, task-incremental over the row's own task's classes only
    preds = {task.name: predict_rows(folder / "1-topics", task.eval_datasets[0].path) for task in cfg.tasks}
    model, tokenizer = load_classifier(folder / "1-topics" / "final")
    for scenario in ("class_incremental", "task_incremental"):
        expected = []
        for task in cfg.tasks:
            allowed = task.labels if scenario == "task_incremental" else cfg.labels()
            right = [max(allowed, key=p["probabilities"].get) == p["reference"] for p in preds[task.name]]
            expected.append(sum(right) / len(right))
        assert score_row(model, tokenizer, cfg.model_copy(update={"scenario": scenario})) == expected
        if scenario == "class_incremental":
            assert result["R"][1] == expected


@pytest.mark.parametrize("name", ["naive", "joint", "ewc", "si", "mas", "l2_sp", "replay"])
def test_each_strategy_changes_the_second_task_as_it_says(sequence_raw, tmp_path, name):
    cfg = load_continual_config(raw=sequence_raw(method={"name": "lora", "r": 2}))
    previous = tmp_path / "runs" / "seq" / name / "0-sentiment" / "final"
    ctx = TaskContext(1, cfg, tmp_path / "runs" / "seq" / name, previous)
    base = task_run_config(cfg, ctx)
    assert base["method"]["init_from"] == str(previous)  # an adapter: trained on from the previous task's
    changed = STRATEGIES.get(name).changes(json.loads(json.dumps(base)), getattr(cfg.strategies, name, None), ctx)
    topics = cfg.tasks[1].datasets[0].path
    if name == "naive":
        assert changed == base
    elif name == "joint":
        assert [s["path"] for s in changed["data"]["datasets"]] == [cfg.tasks[0].datasets[0].path, topics]
    elif name == "replay":
        source = changed["data"]["datasets"][1]
        rows = [json.loads(line) for line in open(source["path"])]
        assert len(rows) == 16 and all(r["label"] in ("neg", "pos") for r in rows)  # the first task's, all kept
        assert source["weight"] == pytest.approx(replay.mix_weight(16, 16, 0.1))
    else:
        item, = changed["regularizers"]
        assert item["name"] == name
        assert item.get("previous", str(previous / "regularizers")) == str(previous / "regularizers")
