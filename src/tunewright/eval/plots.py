"""PNG plots of runs and comparisons, drawn with matplotlib (Agg backend: files only, no display).

Every function returns the series it drew, in the JSON form results.json stores, so tests and
readers can check a picture against the numbers beside it:

    plot_loss(metrics, path)            {"train": [(step, loss)], "eval": [(step, eval_loss)]}
    plot_curves(metrics, keys, path)    {key: [[step, value], ...]}       one panel per metric
    plot_metric_bars(scores, path)      {metric: {candidate: value}}      one panel per metric
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["plot_loss", "plot_curves", "plot_metric_bars", "curve_keys"]

# logged numbers that are not curves worth a panel: counts, timings, and eval_loss (drawn by plot_loss)
_NOT_CURVES = {"step", "loss", "lr", "eval_loss", "eval_perplexity", "eval_tokens", "tokens", "tokens_per_s",
               "grad_norm", "epoch", "seconds"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt
    return plt


def plot_loss(metrics: list[dict], path: Path, title: str = "Training loss") -> dict:
    """Train loss per step and eval loss per evaluation, as a PNG; returns the series drawn."""
    plt = _pyplot()
    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals), label="held-out loss", color="tab:orange", marker="o")
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per target token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {"train": train, "eval": evals}


def curve_keys(metrics: list[dict]) -> list[str]:
    """Evaluation metrics logged during training besides the loss (e.g. eval_rouge1, eval_auc)."""
    keys = {k for m in metrics for k, v in m.items()
            if k.startswith("eval_") and k not in _NOT_CURVES and isinstance(v, (int, float))
            and not isinstance(v, bool)}
    return sorted(keys)


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def plot_curves(metrics: list[dict], keys: list[str], path: Path, title: str = "Evaluation metrics") -> dict:
    """One panel per metric key: its value at each step where it was logged. [[step, value], ...]"""
    plt = _pyplot()
    series = {k: [[m["step"], m[k]] for m in metrics if k in m] for k in keys}
    rows, cols = _grid(len(keys))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=100, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        if series[key]:
            ax.plot(*zip(*series[key]), marker="o", color="tab:green", label=key)
        ax.set_title(key)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key.removeprefix("eval_"))
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return series


def plot_metric_bars(scores: dict[str, dict[str, float]], path: Path,
                     title: str = "Candidates compared") -> dict[str, dict[str, float]]:
    """One panel per metric, one bar per candidate (each panel its own scale: BLEU is 0-100, ROUGE
    0-1), the value written on each bar. `scores`: {candidate: {metric: value}}."""
    plt = _pyplot()
    candidates = list(scores)
    keys = list(dict.fromkeys(k for s in scores.values() for k in s))
    series = {k: {c: scores[c][k] for c in candidates if k in scores[c]} for k in keys}
    colors = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(candidates)}
    rows, cols = _grid(max(1, len(keys)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), dpi=100, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        names = list(series[key])
        values = [series[key][c] for c in names]
        bars = ax.bar(range(len(names)), values, color=[colors[c] for c in names])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(key)
        ax.set_xlabel("candidate")
        ax.set_ylabel(key)
        if values and min(values) >= 0:  # scores start at 0: a bar's height is its value
            ax.set_ylim(0, max(values) * 1.15 or 1.0)  # headroom for the labels; all-zero panels 0-1
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[c]) for c in candidates]
    fig.legend(handles, candidates, loc="lower center", ncol=min(len(candidates), 4), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return series
