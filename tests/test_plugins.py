"""Plug-ins: a module written beside a recipe registers a toy objective and a toy regularizer, and
`tunewright train` runs them with no file under src/ changed; the run folder records the plug-in;
generate imports it again, and stops with one line when it is gone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tunewright.cli import main
from tunewright.objectives import OBJECTIVES
from tunewright.regularizers import REGULARIZERS
from tunewright.schema import refresh_unions

PLUGIN = '''
"""A toy objective (mean token loss per row: the unit is rows) and a toy regularizer (counts calls)."""
import sys
from typing import Literal

import torch
from pydantic import Field

from tunewright.objectives import OBJECTIVES, causal_lm
from tunewright.regularizers import REGULARIZERS
from tunewright.sections import Section

this = sys.modules[__name__]


class Config(Section):
    name: Literal["row_mean"] = Field("row_mean", description="Each row's mean token loss, summed over rows.")


HEAD, FORMATS, TEMPLATED, PACKABLE, UNIT = "causal_lm", None, True, False, "rows"
METRICS = {"long_rows": "mean", "targets": "sum"}
misfit, encode, end_ids, render = (lambda run_cfg: None), causal_lm.encode, causal_lm.end_ids, causal_lm.render


def collate(rows, pad_id, packed):
    return causal_lm.collate(rows, pad_id, False)


def count(batch):
    return int(batch["labels"].shape[0])


def loss(model, batch, cfg, state=None):
    per_row = []
    for r in range(batch["labels"].shape[0]):
        one = {k: v[r:r + 1] for k, v in batch.items() if torch.is_tensor(v)}
        total, _ = causal_lm.loss(model, one, causal_lm.Config())
        per_row.append(total / causal_lm.count(one))
    targets = (batch["labels"][:, 1:] != -100).sum(dim=1)
    return torch.stack(per_row).sum(), {"long_rows": (targets > 3).sum(), "targets": targets.sum()}


class CountingConfig(Section):
    name: Literal["counting"] = Field("counting", description="Counts its calls; adds nothing.")


counting = type(sys)("toy_counting")
counting.Config = CountingConfig
counting.setup = lambda model, run_dir, cfg: {"penalties": 0}


def _penalty(model, state):
    state["penalties"] += 1
    first = next(p for p in model.parameters() if p.requires_grad)
    return first.sum() * 0.0, {"calls": float(state["penalties"])}


counting.penalty = _penalty
OBJECTIVES.register("row_mean", this)
REGULARIZERS.register("counting", counting)
'''


@pytest.fixture
def plugin_recipe(tmp_path, tiny_model_dir):
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    rows = [{"instruction": f"Say {i} words.", "input": "", "output": " ".join(["word"] * (1 + i % 6))}
            for i in range(24)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump({
        "plugins": ["toy_plugin.py"],
        "model": {"name": tiny_model_dir("llama")},
        "data": {"datasets": [{"path": "rows.jsonl"}], "template": "alpaca", "cutoff_len": 48, "val_set_size": 8},
        "objective": {"name": "row_mean"}, "regularizers": [{"name": "counting"}],
        "method": {"name": "lora", "r": 2},
        "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 3, "learning_rate": 1e-2},
        "eval": {"steps": 3, "best_metric": "eval_long_rows", "best_mode": "max"},
        "output": {"dir": str(tmp_path / "runs"), "name": "toy"}}))
    yield recipe
    for name in [m for m in sys.modules if m.startswith("tunewright_plugin_toy_plugin")]:
        del sys.modules[name]
    for registry, name in ((OBJECTIVES, "row_mean"), (REGULARIZERS, "counting")):
        if name in registry:
            registry.unregister(name)
    refresh_unions()


def test_a_plugin_objective_and_regularizer_train_through_the_cli(plugin_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the data path is relative, like a user's
    assert main(["train", str(plugin_recipe)]) == 0, capsys.readouterr().err
    run = tmp_path / "runs" / "toy"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "loss" in m]
    evals = [m for m in lines if "eval_loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3]
    # the objective's unit and declared metrics, combined as declared; the regularizer ran once a step
    assert all(m["target_rows"] == 4 and 0 <= m["long_rows"] <= 1 and m["targets"] >= 4 for m in steps)
    assert [m["reg_counting_calls"] for m in steps] == [1.0, 2.0, 3.0]
    assert evals and "eval_perplexity" not in evals[0] and evals[0]["eval_rows"] == 8
    assert 0 <= evals[0]["eval_long_rows"] <= 1
    # the run folder records the plug-in where a later process finds it
    recorded = str((tmp_path / "toy_plugin.py").resolve())
    assert yaml.safe_load((run / "config.yaml").read_text())["plugins"] == [recorded]
    assert json.loads((run / "final" / "tunewright.json").read_text())["plugins"] == [recorded]


def test_generate_imports_the_plugin_again_or_names_it_when_gone(plugin_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(plugin_recipe)]) == 0
    run = tmp_path / "runs" / "toy"
    # a fresh process knows nothing of the plug-in: forget it here too
    for name in [m for m in sys.modules if m.startswith("tunewright_plugin_toy_plugin")]:
        del sys.modules[name]
    OBJECTIVES.unregister("row_mean")
    REGULARIZERS.unregister("counting")
    capsys.readouterr()
    assert main(["generate", str(run), "-p", "Say 2 words.", "--max-new-tokens", "2"]) == 0
    assert "row_mean" in OBJECTIVES  # imported again from the recorded path
    for name in [m for m in sys.modules if m.startswith("tunewright_plugin_toy_plugin")]:
        del sys.modules[name]
    OBJECTIVES.unregister("row_mean")
    REGULARIZERS.unregister("counting")
    Path(tmp_path / "toy_plugin.py").rename(tmp_path / "moved.py")
    capsys.readouterr()
    assert main(["generate", str(run), "-p", "Say 2 words."]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "toy_plugin.py: no such plug-in file" in err


def test_a_missing_plugin_module_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"plugins": ["no_such_module_xyz"], "data": {"datasets": [{"path": "x"}]}}))
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plugins.0: cannot import plug-in 'no_such_module_xyz'" in err
