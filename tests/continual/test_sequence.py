"""Each strategy's changes to a task's run config (the sequence itself runs in test_compare.py)."""

from __future__ import annotations

import json

import pytest
from tunewright.continual import replay
from tunewright.continual.config import load_continual_config
from tunewright.continual.sequence import task_run_config
from tunewright.continual.strategies import STRATEGIES, TaskContext


@pytest.mark.parametrize("name", ["naive", "joint", "ewc", "si", "mas", "l2_sp", "replay", "lwf", "adapters"])
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
    elif name == "adapters":  # a new adapter on the base, nothing else changed
        assert changed == {**base, "method": {k: v for k, v in base["method"].items() if k != "init_from"}}
    elif name == "lwf":  # the old classes distilled from the model before this task
        assert changed["objective"] == {"name": "lwf", "labels": ["neg", "pos", "sport", "sci"],
                                        "teacher": str(previous), "old_labels": ["neg", "pos"],
                                        "weight": 1.0, "temperature": 2.0}
        first = STRATEGIES.get(name).changes(task_run_config(cfg, TaskContext(0, cfg, ctx.folder, None)),
                                             cfg.strategies.lwf, TaskContext(0, cfg, ctx.folder, None))
        assert first["objective"]["name"] == "classification"  # nothing before the first task to distil
    else:
        item, = changed["regularizers"]
        assert item["name"] == name
        assert item.get("previous", str(previous / "regularizers")) == str(previous / "regularizers")


@pytest.mark.parametrize("name, message", [("progressive", "'progressive' is not built \\(progressive or expandable"),
                                           ("ewk", "unknown strategy 'ewk' \\(did you mean \"ewc\"\\?\\)")])
def test_a_strategy_not_built_is_refused_before_anything_trains(sequence_raw, tmp_path, name, message):
    from tunewright.continual.sequence import compare
    from tunewright.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        compare(load_continual_config(raw=sequence_raw()), ["naive", name], say=lambda *a: None)
    assert not (tmp_path / "runs").exists()
