"""Run reports: a markdown page with tables, sample outputs and PNG plots, plus results.json.

Plots are drawn from the same numbers that go into results.json, so a reader can check one
against the other.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_loss", "markdown_table", "write_results"]


def plot_loss(metrics: list[dict], path: Path, title: str = "Training loss") -> dict:
    """Train loss per step and eval loss per evaluation, as a PNG; returns the series drawn."""
    import matplotlib
    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

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


def markdown_table(header: list[str], rows: list[list]) -> str:
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(path: Path, results: dict) -> None:
    Path(path).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
