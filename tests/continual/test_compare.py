"""`tunewright continual compare`: one sequence per strategy, each task a run of run.py in
runs/<name>/<strategy>/<i>-<task>/ starting from the previous task's final/; R scored per scenario
(checked against `tunewright predict`'s probabilities); results.json, report.md, a heatmap of R
per strategy and the first task's curve, whose drawn values read back equal results.json; each
strategy's R differs from naive's (a strategy whose settings were ignored would train naive)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunewright.cli import main
from tunewright.continual.config import load_continual_config
from tunewright.continual.sequence import score_row


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved, by file name: its images' arrays and its lines' points."""
    from matplotlib.figure import Figure

    drawn: dict = {}
    save = Figure.savefig

    def spy(fig, path, *args, **kwargs):
        drawn[Path(path).name] = {"images": [ax.images[0].get_array().tolist() for ax in fig.axes if ax.images],
                                  "lines": {line.get_label(): [float(y) for y in line.get_ydata()]
                                            for ax in fig.axes for line in ax.get_lines()}}
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return drawn


def test_compare_writes_the_results_and_each_strategy_changes_r(sequence_raw, tiny_model_dir, tmp_path, figures):
    path = tmp_path / "forgetting.yaml"
    # lr 1e-2: naive forgets the first task entirely (1.0 -> 0.0), so each strategy has something to change
    raw = sequence_raw(model={"name": tiny_model_dir("llama")},
                       train={"max_steps": 4, "batch_size": 4, "micro_batch_size": 4, "learning_rate": 1e-2, "seed": 5},
                       strategies={"ewc": {"weight": 1.0e6, "samples": 16}, "replay": {"ratio": 0.5},
                                   "si": {"weight": 1.0e4}, "mas": {"weight": 1.0e4, "samples": 16},
                                   "l2_sp": {"weight": 1.0e3}, "lwf": {"weight": 10.0},
                                   "generative_replay": {"samples": 16, "length": 6, "ratio": 0.8}},
                       output={"dir": str(tmp_path / "runs")})
    path.write_text(yaml.safe_dump(raw))
    every = ["naive", "joint", "ewc", "si", "mas", "l2_sp", "replay", "lwf", "generative_replay"]
    assert main(["continual", "compare", str(path), "--strategies", ",".join(every)]) == 0

    out = tmp_path / "runs" / "forgetting"
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"] == ["sentiment", "topics"] and list(results["strategies"]) == every
    naive = results["strategies"]["naive"]
    for name in every[1:]:
        assert results["strategies"][name]["R"] != naive["R"], name
        assert results["strategies"][name]["zero_shot"] == naive["zero_shot"]  # one starting model
    assert results["strategies"]["ewc"]["extra_bytes"] > 0 and naive["extra_bytes"] == 0
    for name, r in results["strategies"].items():
        assert figures[f"heatmap-{name}.png"]["images"] == [r["R"]]
        assert figures["first_task.png"]["lines"][name] == [r["zero_shot"][0], *(row[0] for row in r["R"])]
    report = (out / "report.md").read_text()
    assert f"| naive | {naive['average_accuracy']:.3f} | {naive['backward_transfer']:+.3f} |" in report
    assert "![R of ewc](heatmap-ewc.png)" in report

    # each task a run of run.py, the second starting from the first's weights (full fine-tuning)
    folder = out / "naive"
    assert sorted(p.name for p in folder.iterdir()) == ["0-sentiment", "1-topics", "sequence.json"]
    second = yaml.safe_load((folder / "1-topics" / "config.yaml").read_text())
    assert second["model"]["name"] == str(folder / "0-sentiment" / "final")
    assert second["objective"]["labels"] == ["neg", "pos", "sport", "sci"]  # one head over the union
    assert json.loads((folder / "sequence.json").read_text())["R"] == naive["R"]
    assert naive["backward_transfer"] == pytest.approx(naive["R"][1][0] - naive["R"][0][0])

    # R's last row from `tunewright predict`'s probabilities: class-incremental takes the argmax over
    # every class, task-incremental over the row's own task's classes only
    from tunewright.eval.predict import load_classifier, predict_rows
    cfg = load_continual_config(path)
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
            assert naive["R"][1] == expected
