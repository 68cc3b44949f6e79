"""Reports: a markdown page with tables, sample outputs and PNG plots, plus results.json.

    write_compare_report(out_dir, results, runs)   `tunewright eval`: candidates side by side,
                                                   improvement over the first, bars per metric,
                                                   the training curves of candidates given as runs
    write_run_report(run_dir, final=choice)        one training run: loss and metric curves from
                                                   its metrics.jsonl, and which step final/ holds

Plots are drawn from the same numbers that go into results.json (each plot's series is stored
under `plots`), so a reader can check one against the other. Every text file is written through the
redactor (`secrets.redact`): a data path or model name holding a token is written as `***`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunewright.eval.plots import curve_keys, plot_curves, plot_loss, plot_metric_bars
from tunewright.secrets import redact, redact_tree

__all__ = ["plot_loss", "markdown_table", "write_results", "write_markdown", "write_compare_report",
           "write_run_report"]


def markdown_table(header: list[str], rows: list[list]) -> str:
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(path: Path, results: dict) -> None:
    """results.json, credentials redacted (data paths and model names may hold a token)."""
    Path(path).write_text(json.dumps(redact_tree(results), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_markdown(path: Path, text: str) -> None:
    """report.md, credentials redacted."""
    Path(path).write_text(redact(text), encoding="utf-8")


def _json(value):
    """The value as results.json will hold it (tuples become lists), so plots and file compare equal."""
    return json.loads(json.dumps(value))


def _inline(text) -> str:
    """One line for a markdown code span: newlines shown as \\n, backticks softened."""
    if not isinstance(text, str):
        text = json.dumps(text, ensure_ascii=False)
    return text.replace("\n", "\\n").replace("`", "'")


def _run_plots(run_dir: Path, out_dir: Path, suffix: str, title: str) -> tuple[dict, list[str]]:
    """Loss and metric curves of a run's metrics.jsonl -> ({file: series}, markdown image lines)."""
    from tunewright.training.logging import read_metrics

    metrics = read_metrics(run_dir)
    if not metrics:
        return {}, [f"_{run_dir}: no metrics.jsonl to plot_"]
    plots, lines = {}, []
    name = f"loss{suffix}.png"
    plots[name] = _json(plot_loss(metrics, out_dir / name, title=f"{title}: loss"))
    lines.append(f"![loss]({name})")
    keys = curve_keys(metrics)
    if keys:
        name = f"curves{suffix}.png"
        plots[name] = _json(plot_curves(metrics, keys, out_dir / name, title=f"{title}: evaluation metrics"))
        lines.append(f"![metric curves]({name})")
    return plots, lines


def _signed(change: dict) -> str:
    rel = change["relative"]
    return f"{change['delta']:+.4f}" + (f" ({rel:+.1%})" if rel is not None else "")


def write_compare_report(out_dir: Path, results: dict, runs: dict[str, Path] | None = None) -> dict:
    """Plots, results.json and report.md for a comparison; returns `results` with its `plots`.

    `results` as built by `compare.evaluate_candidates` (candidates with scores and improvement,
    data counts, metric settings, samples); `runs` maps candidate names to their run folders.
    """
    out_dir = Path(out_dir)
    candidates = results["candidates"]
    baseline = results["baseline"]
    keys = list(dict.fromkeys(k for c in candidates for k in c["scores"]))
    plots = {"metrics.png": plot_metric_bars({c["name"]: c["scores"] for c in candidates}, out_dir / "metrics.png",
                                             title=f"{len(candidates)} candidates on {results['data']['used']} rows")}
    curve_lines = []
    for name, run_dir in (runs or {}).items():
        drawn, lines = _run_plots(Path(run_dir), out_dir, f"-{name}", name)
        plots.update(drawn)
        curve_lines += [f"### {name} ({run_dir})", "", " ".join(lines), ""]
    results = {**results, "plots": plots}
    write_results(out_dir / "results.json", results)

    d, g = results["data"], results["generation"]
    decoding = (f"sampling (temperature {g['temperature']}, top-p {g['top_p']}, seed {g['seed']})" if g["do_sample"]
                else "greedy decoding")
    scores = markdown_table(["candidate", "source", *keys],
                            [[c["name"], c["source"], *[c["scores"].get(k, "") for k in keys]] for c in candidates])
    better = markdown_table(["candidate", *keys],
                            [[c["name"], *[_signed(c["improvement"][k]) if k in c["improvement"] else "" for k in keys]]
                             for c in candidates[1:]]) if len(candidates) > 1 else "_one candidate only_"
    groups = _group_table(results, keys) if d.get("group_by") else []
    settings = "\n".join(f"- **{name}**: {how}" for name, how in results["metrics"].items())
    samples = "\n\n".join(
        f"**row {s['line']}**: `{_inline(s['prompt'])}`\n\n- reference: `{_inline(s['reference'])}`\n"
        + "\n".join(f"- {name}: `{_inline(out)}`" for name, out in s["outputs"].items())
        for s in results["samples"])
    outputs = ", ".join(f"[{c['outputs']}]({c['outputs']})" for c in candidates)
    text = [
        f"# Evaluation: {out_dir.name}", "",
        f"{d['used']} rows of `{d['path']}` ({d['format']}; read {d['read']}, bad {d['bad']}, skipped "
        f"{d['skipped']}, cut {d['cut']}); {results.get('how') or decoding + ', at most ' + str(g['max_new_tokens']) + ' new tokens'}; "
        + ("" if results.get("how") else f"{d['shots']}-shot prompts (examples from `{d['shots_from']}`); "
           if d.get("shots") else "zero-shot; ")  # shots shape generation prompts only
        + "every candidate answers the same prompts.", "",
        "## Scores", "", scores, "",
        f"## Improvement over {baseline}", "",
        "Absolute change in the metric's units, relative change in parentheses.", "", better, "",
        "![candidates per metric](metrics.png)", "",
        *groups,
    ]
    if curve_lines:
        text += ["## Training curves", "", *curve_lines]
    text += ["## How the metrics were computed", "", settings, "",
             "## Sample outputs", "", samples or "_none_", "",
             f"All outputs, with per-example scores: {outputs}.", ""]
    write_markdown(out_dir / "report.md", "\n".join(text))
    return results


def _group_table(results: dict, keys: list[str]) -> list[str]:
    """Markdown lines: one row per group (data.group_by), each candidate's scores on that group alone."""
    candidates = results["candidates"]
    groups = list(dict.fromkeys(g for c in candidates for g in c.get("groups", {})))
    header = [results["data"]["group_by"], "rows", *(f"{c['name']}: {k}" for c in candidates for k in keys)]
    rows = [[g, candidates[0]["groups"][g]["rows"], *(c["groups"][g].get(k, "") for c in candidates for k in keys)]
            for g in groups]
    return [f"## Scores per {results['data']['group_by']}", "", "Each group scored as its own corpus.", "",
            markdown_table(header, rows), ""]


def write_run_report(run_dir: Path, title: str | None = None, final: dict | None = None) -> dict:
    """report.md, results.json and plots (loss.png, curves.png) for a training run folder, from its
    metrics.jsonl: the curves, the last value of every logged metric, the best eval loss, and which
    step final/ holds (`final`, as training/best.final_choice gives it)."""
    from tunewright.training.best import describe
    from tunewright.training.logging import read_metrics

    run_dir = Path(run_dir)
    title = title or run_dir.name
    metrics = read_metrics(run_dir)
    plots, lines = _run_plots(run_dir, run_dir, "", title)
    last: dict = {}
    for m in metrics:
        last.update({k: v for k, v in m.items() if k != "step"})
    evals = [m for m in metrics if "eval_loss" in m]
    best = min(evals, key=lambda m: m["eval_loss"]) if evals else None
    results = {"run": title, "steps": max((m["step"] for m in metrics), default=0), "last": last,
               "best_eval": {"step": best["step"], "eval_loss": best["eval_loss"]} if best else None,
               **({"final": final} if final else {}), "plots": plots}
    write_results(run_dir / "results.json", results)
    table = markdown_table(["metric", "last value"], [[k, v] for k, v in sorted(last.items())])
    best_line = (f"Best held-out loss {best['eval_loss']:.4f} at step {best['step']}." if best
                 else "No held-out evaluation was logged.")
    if final:
        best_line += f" {describe(final)}."
    write_markdown(run_dir / "report.md",
                   f"# Run: {title}\n\n{results['steps']} optimizer steps. {best_line}\n\n{table}\n\n"
                   + "\n\n".join(lines) + "\n")
    return results
