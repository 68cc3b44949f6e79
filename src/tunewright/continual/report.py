"""`tunewright continual compare`'s outputs: results.json (every strategy's R, zero-shot row,
transfer numbers and costs, and with probes P and its zero-shot row), report.md (the tables: with
probes, each probe's score at the start and after the last task), and the figures, each drawing function
returning the numbers it drew (as eval/plots.py's do), so a test reads them back against
results.json:

    heatmap-<strategy>.png   R as a grid: row i = after training task i, column j = task j
    first_task.png           the first task's score before training and after each task, per strategy
"""

from __future__ import annotations

import json
from pathlib import Path

from tunewright.disk import write_text_atomic
from tunewright.eval.plots import _pyplot

__all__ = ["plot_heatmap", "plot_first_task", "write_report", "markdown_tables", "strategy_table", "probe_table"]


def plot_heatmap(strategy: str, R: list[list[float]], tasks: list[str], path: Path) -> list[list[float]]:
    """R as an image (0 to 1), each cell's value written in it; returns the grid drawn."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.4 * len(tasks) + 2, 1.2 * len(R) + 1.5), dpi=100)
    ax.imshow(R, vmin=0.0, vmax=1.0, cmap="viridis")
    for i, row in enumerate(R):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(R)), [f"after {t}" for t in tasks[:len(R)]])
    ax.set_xlabel("scored on task")
    ax.set_title(f"{strategy}: accuracy R[i][j]")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return [list(map(float, row)) for row in R]


def plot_first_task(results: dict, tasks: list[str], path: Path) -> dict[str, list[float]]:
    """The first task's accuracy at the start (zero-shot) and after each task, one line per strategy."""
    plt = _pyplot()
    series = {name: [r["zero_shot"][0], *(row[0] for row in r["R"])] for name, r in results.items()}
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, values in series.items():
        ax.plot(range(len(values)), values, marker="o", label=name)
    ax.set_xticks(range(len(tasks) + 1), ["start", *(f"after {t}" for t in tasks)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"accuracy on {tasks[0]}")
    ax.set_title("The first task across the sequence")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return series


def markdown_tables(results: dict, tasks: list[str]) -> list[str]:
    """The strategies' table (transfer numbers and costs), then R of each strategy."""
    lines = strategy_table(results)
    for name, r in results.items():
        lines += ["", f"R of {name}:", "", "| after \\ on | " + " | ".join(tasks) + " |",
                  "|---|" + "---|" * len(tasks),
                  "| start (zero-shot) | " + " | ".join(f"{v:.3f}" for v in r["zero_shot"]) + " |"]
        lines += [f"| {t} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for t, row in zip(tasks, r["R"])]
    return lines


def strategy_table(results: dict) -> list[str]:
    lines = ["| strategy | avg accuracy | BWT | FWT | forgetting | wall s | extra bytes | uses task identity |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['average_accuracy']:.3f} | {r['backward_transfer']:+.3f} | "
                     f"{r['forward_transfer']:+.3f} | {r['forgetting']:.3f} | {sum(r['seconds']):.1f} | "
                     f"{r['extra_bytes']:,} | {'yes' if r['task_identity'] else 'no'} |")
    return lines


def probe_table(results: dict) -> list[str]:
    """Each strategy's probes (continual/probes.py): the score before the first task (zero-shot), after
    the last one, and the change; none when the sequences had no probes."""
    if not any(r.get("probes") for r in results.values()):
        return []
    lines = ["Probes (never trained): answer_accuracy is the share of answer tokens predicted right (higher is "
             "better), answer_loss the mean negative log-likelihood per answer token in nats (lower is better).", "",
             "| strategy | probe | metric | start (zero-shot) | after the last task | change |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        for k, probe in enumerate(r.get("probes", [])):
            start, last = r["zero_shot_P"][k], r["P"][-1][k]
            lines.append(f"| {name} | {probe['name']} | {probe['metric']} | {start:.3f} | {last:.3f} | "
                         f"{last - start:+.3f} |")
    return lines


def write_report(out: Path, cfg, results: dict) -> None:
    """results.json, the figures and report.md in `out`."""
    tasks = [t.name for t in cfg.tasks]
    out.mkdir(parents=True, exist_ok=True)
    # atomic: a compare rerun rewrites these in place, and a crash must not leave half a results.json
    write_text_atomic(out / "results.json", json.dumps({"scenario": cfg.scenario, "tasks": tasks,
                                                        "strategies": results}, indent=1))
    lines = [f"# Continual learning: {cfg.output.name or 'continual'}", "",
             f"Scenario **{cfg.scenario}**: " + ("the test chooses among every task's labels (it is not told the "
                                                 "row's task)." if cfg.scenario == "class_incremental" else
                                                 "the test chooses among the row's own task's labels (the task "
                                                 "identity is given at test time)."),
             f"Tasks in order: {', '.join(tasks)}. R[i][j] = accuracy on task j after training tasks 0..i; BWT "
             "and FWT after Lopez-Paz & Ranzato (2017), forgetting (largest drop) after Chaudhry et al. (2018).",
             "", *markdown_tables(results, tasks), ""]
    probes = probe_table(results)
    lines += [*probes, ""] if probes else []
    lines += ["![first task](first_task.png)", ""]
    plot_first_task(results, tasks, out / "first_task.png")
    for name, r in results.items():
        plot_heatmap(name, r["R"], tasks, out / f"heatmap-{name}.png")
        lines.append(f"![R of {name}](heatmap-{name}.png)")
    write_text_atomic(out / "report.md", "\n".join(lines))
