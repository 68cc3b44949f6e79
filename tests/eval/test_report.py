"""Reports: what the plots draw (read back from the figures themselves) equals results.json and
metrics.jsonl; titles, axis labels and legends are there; report.md shows the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewright.eval.report import markdown_table, plot_loss, write_compare_report, write_results, write_run_report

METRICS_LOG = [
    {"step": 0, "eval_loss": 3.0, "eval_perplexity": 20.1, "eval_tokens": 40, "eval_rouge1": 0.10},
    {"step": 1, "loss": 3.2, "lr": 1e-3},
    {"step": 2, "loss": 2.9, "lr": 1e-3, "eval_loss": 2.5, "eval_perplexity": 12.2, "eval_tokens": 40,
     "eval_rouge1": 0.20, "eval_accuracy": 0.5},
    {"step": 3, "loss": 2.4, "lr": 5e-4},
    {"step": 4, "loss": 2.0, "lr": 0.0, "eval_loss": 2.6, "eval_tokens": 40, "eval_rouge1": 0.25, "eval_accuracy": 0.75},
]


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved, by file name: its axes' titles, labels, legends, lines and bars."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    drawn: dict[str, dict] = {}
    save = Figure.savefig

    def spy(fig, path, *args, **kwargs):
        axes = []
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            legend = ax.get_legend()
            axes.append({
                "title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
                "lines": {line.get_label(): [[float(x), float(y)] for x, y in zip(*line.get_data())]
                          for line in ax.get_lines()},
                "bars": [p.get_height() for p in ax.patches],
                "xticks": [t.get_text() for t in ax.get_xticklabels()],
            })
        drawn[Path(path).name] = {"suptitle": fig._suptitle.get_text() if fig._suptitle else "", "axes": axes,
                                  "legend": [t.get_text() for lg in fig.legends for t in lg.get_texts()]}
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return drawn


def run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "lora"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in METRICS_LOG))
    return run


def results_of(names_scores: dict) -> dict:
    cands = [{"name": n, "source": f"src/{n}", "run": None, "scores": s, "outputs": f"outputs-{n}.jsonl", "seconds": 1.0}
             for n, s in names_scores.items()]
    base = cands[0]["scores"]
    for c in cands[1:]:
        c["improvement"] = {k: {"delta": v - base[k], "relative": (v - base[k]) / base[k] if base[k] else None}
                            for k, v in c["scores"].items()}
    return {"data": {"path": "d.jsonl", "format": "alpaca", "read": 9, "bad": 1, "skipped": 2, "cut": 0, "used": 6},
            "generation": {"max_new_tokens": 16, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "seed": 0},
            "metrics": {"rouge": "ROUGE settings sentence", "bleu": "BLEU settings sentence"},
            "baseline": cands[0]["name"], "candidates": cands,
            "samples": [{"line": 3, "prompt": "Say `hi`\nnow", "reference": "hi",
                         "outputs": {n: f"answer of {n}" for n in names_scores}}]}


SCORES = {"zero-shot": {"rouge1": 0.25, "rougeL": 0.2, "bleu": 0.0},
          "full": {"rouge1": 0.4, "rougeL": 0.3, "bleu": 10.0},
          "lora": {"rouge1": 0.3, "rougeL": 0.35, "bleu": 12.5}}


def test_compare_report_plots_the_numbers_of_results_json(tmp_path, figures):
    run = run_folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    write_compare_report(out, results_of(SCORES), {"lora": run})
    saved = json.loads((out / "results.json").read_text())

    # bars: one panel per metric, one bar per candidate, heights = the scores in results.json
    from_file = {c["name"]: c["scores"] for c in saved["candidates"]}
    assert saved["plots"]["metrics.png"] == {k: {c: from_file[c][k] for c in from_file} for k in SCORES["lora"]}
    bars = figures["metrics.png"]
    assert [a["title"] for a in bars["axes"]] == ["rouge1", "rougeL", "bleu"]
    for ax in bars["axes"]:
        assert ax["bars"] == pytest.approx([from_file[c][ax["title"]] for c in from_file])
        assert ax["xticks"] == list(from_file) and ax["xlabel"] and ax["ylabel"] == ax["title"]
    assert bars["legend"] == list(SCORES) and bars["suptitle"]

    # the run's loss curves and metric curves = its metrics.jsonl
    loss = figures["loss-lora.png"]["axes"][0]
    train = [[m["step"], m["loss"]] for m in METRICS_LOG if "loss" in m]
    held = [[m["step"], m["eval_loss"]] for m in METRICS_LOG if "eval_loss" in m]
    assert loss["lines"] == {"train loss": train, "held-out loss": held}
    assert saved["plots"]["loss-lora.png"] == {"train": train, "eval": held}
    assert loss["title"] and loss["xlabel"] == "optimizer step" and loss["ylabel"] and len(loss["legend"]) == 2
    curves = figures["curves-lora.png"]["axes"]
    assert [a["title"] for a in curves] == ["eval_accuracy", "eval_rouge1"]  # not loss, perplexity, token counts
    for ax in curves:
        expected = [[m["step"], m[ax["title"]]] for m in METRICS_LOG if ax["title"] in m]
        assert ax["lines"][ax["title"]] == expected == saved["plots"]["curves-lora.png"][ax["title"]]
        assert ax["legend"] == [ax["title"]] and ax["xlabel"] == "optimizer step"
    for name in saved["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_report_markdown_shows_the_same_numbers(tmp_path, figures):
    out = tmp_path / "out"
    out.mkdir()
    write_compare_report(out, results_of(SCORES))
    md = (out / "report.md").read_text()
    assert "| lora | src/lora | 0.300 | 0.350 | 12.500 |" in md
    assert "## Improvement over zero-shot" in md
    # rouge1 +0.05 (+20%), rougeL +0.15 (+75%), bleu +12.5 from 0 (no relative change)
    assert "| lora | +0.0500 (+20.0%) | +0.1500 (+75.0%) | +12.5000 |" in md
    assert "| full | +0.1500 (+60.0%) | +0.1000 (+50.0%) | +10.0000 |" in md
    assert "![candidates per metric](metrics.png)" in md and "Training curves" not in md
    assert "- **bleu**: BLEU settings sentence" in md
    assert "6 rows of `d.jsonl` (alpaca; read 9, bad 1, skipped 2, cut 0)" in md
    # samples on one line per answer, backticks softened
    assert "**row 3**: `Say 'hi'\\nnow`" in md and "- full: `answer of full`" in md
    assert "[outputs-lora.jsonl](outputs-lora.jsonl)" in md


def test_run_report_from_metrics_jsonl(tmp_path, figures):
    run = run_folder(tmp_path)
    results = write_run_report(run)
    saved = json.loads((run / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["steps"] == 4 and saved["best_eval"] == {"step": 2, "eval_loss": 2.5}
    assert saved["last"]["loss"] == 2.0 and saved["last"]["eval_accuracy"] == 0.75
    assert saved["plots"]["loss.png"]["eval"] == [[0, 3.0], [2, 2.5], [4, 2.6]]
    assert figures["curves.png"]["axes"][1]["lines"]["eval_rouge1"] == [[0, 0.1], [2, 0.2], [4, 0.25]]
    md = (run / "report.md").read_text()
    assert "Best held-out loss 2.5000 at step 2." in md and "![loss](loss.png)" in md and "![metric curves](curves.png)" in md


def test_run_report_without_metrics_says_so(tmp_path, figures):
    run = tmp_path / "empty"
    run.mkdir()
    results = write_run_report(run)
    assert results["plots"] == {} and results["best_eval"] is None and not figures
    assert "No held-out evaluation was logged." in (run / "report.md").read_text()


def test_the_demo_helpers_still_work(tmp_path, figures):
    series = plot_loss(METRICS_LOG, tmp_path / "loss.png", title="demo")
    assert series["eval"] == [(0, 3.0), (2, 2.5), (4, 2.6)]
    assert figures["loss.png"]["axes"][0]["title"] == "demo"
    assert markdown_table(["a", "b"], [["x|y", 0.12345]]) == "| a | b |\n|---|---|\n| x\\|y | 0.123 |"
    write_results(tmp_path / "r.json", {"ü": 1})
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) == {"ü": 1}
