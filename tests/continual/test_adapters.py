"""The `adapters` strategy: one LoRA per task on one base, each with its own copy of the head, rows
routed to their task's adapter at test time. Isolation by construction: after the second task the
first task's rows get exactly the probabilities the first task's adapter alone gives them, so its
score is exactly what it was; the report says the strategy used the task identity."""

from __future__ import annotations

import json

import pytest
import yaml

from tunewright.continual.config import load_continual_config
from tunewright.continual.sequence import compare
from tunewright.errors import ConfigError


def test_each_task_its_adapter_the_first_task_kept_exactly(sequence_raw, tiny_model_dir, tmp_path):
    from tunewright.config import DataConfig
    from tunewright.continual.strategies import STRATEGIES, TaskContext
    from tunewright.data.mixture import load_examples
    from tunewright.eval.predict import load_classifier, predict_examples

    model_dir = tiny_model_dir("llama")
    cfg = load_continual_config(raw=sequence_raw(
        model={"name": model_dir}, method={"name": "lora", "r": 2, "lora_dropout": 0.0},
        train={"max_steps": 4, "batch_size": 4, "micro_batch_size": 4, "learning_rate": 1e-2, "seed": 5}))
    results = compare(cfg, ["naive", "adapters"], say=lambda *a: None)
    naive, adapters = results["naive"], results["adapters"]
    assert adapters["R"][1][0] == adapters["R"][0][0]  # the first task's score after the second: unchanged
    assert naive["R"][1][0] != naive["R"][0][0] and adapters["R"] != naive["R"]  # one adapter trained on forgets
    assert adapters["task_identity"] and not naive["task_identity"]
    assert adapters["extra_bytes"] > 0  # the first task's adapter and head, kept for routing
    report = (tmp_path / "runs" / "seq" / "report.md").read_text()
    assert report.splitlines()[[line.startswith("| adapters |") for line in report.splitlines()].index(True)].endswith(
        "| yes |")

    folder = tmp_path / "runs" / "seq" / "adapters"
    second = yaml.safe_load((folder / "1-topics" / "config.yaml").read_text())
    assert second["model"]["name"] == model_dir and second["method"]["init_from"] is None  # a new adapter, on the base

    # the routed model (both adapters on one base) answers the first task's rows bit for bit as the
    # first task's adapter alone; the second's adapter (another head) answers them otherwise
    task = cfg.tasks[0]
    src = task.eval_datasets[0]
    examples = load_examples(src, DataConfig(datasets=[src], cutoff_len=cfg.data.cutoff_len))[0]
    model, tokenizer, route = STRATEGIES.get("adapters").load(cfg, TaskContext(1, cfg, folder, folder / "0-sentiment"))
    with route(task):
        routed = predict_examples(model, tokenizer, examples)
    alone = predict_examples(*load_classifier(folder / "0-sentiment" / "final"), examples)
    other = predict_examples(*load_classifier(folder / "1-topics" / "final"), examples)
    assert [p["probabilities"] for p in routed] == [p["probabilities"] for p in alone]
    assert [p["probabilities"] for p in other] != [p["probabilities"] for p in alone]
    assert json.loads((folder / "sequence.json").read_text())["R"] == adapters["R"]


def test_a_method_without_adapters_is_refused_before_anything_trains(sequence_raw, tmp_path):
    with pytest.raises(ConfigError, match="--strategies adapters: method.name: strategy adapters trains one PEFT "
                                          "adapter per task .* 'full' is not one"):
        compare(load_continual_config(raw=sequence_raw()), ["naive", "adapters"], say=lambda *a: None)
    assert not (tmp_path / "runs").exists()
