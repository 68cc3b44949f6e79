"""Recorded: EWC's λ swept from "no effect" to "frozen", scaled to the Fisher, on a two-task
sequence scored class-incremental and task-incremental (the continual tests' sentiment-then-topics
words, more rows and steps) on a tiny random llama (lab/tiny.py: 64 wide, 2 layers), full fine-tuning, lr 1e-2, AdamW.

    OMP_NUM_THREADS=1 python -m benchmarks.continual_ewc_sweep   # -> results/continual_ewc_sweep.{json,md}

λ = 0 first: its run computes the first task's Fisher F (the λ = 0 penalty is zero, so the run is
naive's); then λ = k / (lr · max F) for each k in SCALES (lr · max F λ = 1: the penalty's curvature
on the most important weight equals the inverse step size, the EWC toy test's "holds within 1e-3").
For each λ: R, the first task's retention R[1][0], the second task's accuracy R[1][1], and how far
the 10 weights of largest F moved from θ* during the second task (max |θ − θ*|).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SCALES = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3, 1e4]
SCENARIOS = ("class_incremental", "task_incremental")
LR, STEPS, TRAIN_ROWS, TEST_ROWS = 1e-2, 12, 48, 32


def _config(folder: Path, model: str, weight: float, name: str, scenario: str) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "continual"))
    from sequences import _rows, sequence_config

    raw = sequence_config(folder, model={"name": model}, strategies={"ewc": {"weight": weight, "samples": TRAIN_ROWS}},
                          train={"max_steps": STEPS, "batch_size": 4, "micro_batch_size": 4, "learning_rate": LR,
                                 "seed": 5},
                          output={"dir": str(folder / "runs"), "name": name}, scenario=scenario)
    for task, labels in zip(raw["tasks"], (["neg", "pos"], ["sport", "sci"])):  # more rows than the tests' 16 / 8
        for key, n, seed in (("datasets", TRAIN_ROWS, 1), ("eval_datasets", TEST_ROWS, 2)):
            Path(task[key][0]["path"]).write_text("".join(json.dumps(r) + "\n" for r in _rows(labels, n, seed)))
    return raw


def _moved(run: Path, top: dict) -> float:
    """max |θ − θ*| over the weights of largest Fisher after the second task."""
    from safetensors.torch import load_file

    after = load_file(run / "1-topics" / "final" / "model.safetensors")
    return max(abs(float(after[name].flatten()[i]) - theta) for name, i, theta in top["weights"])


def _fisher(state: dict) -> dict:
    """The Fisher's mean and max, and the 10 weights of largest F with their anchor values θ*."""
    import torch

    F = {n[len("importance/"):]: t for n, t in state.items() if n.startswith("importance/")}
    flat = torch.cat([t.flatten() for t in F.values()]).double()
    ranked = sorted(((float(t.flatten()[i]), n, i) for n, t in F.items()
                     for i in torch.topk(t.flatten(), min(10, t.numel())).indices.tolist()), reverse=True)
    return {"mean": float(flat.mean()), "max": float(flat.max()), "parameters": flat.numel(),
            "weights": [(n, i, float(state[f"anchor/{n}"].flatten()[i])) for _, n, i in ranked[:10]]}


def main() -> None:
    import torch
    from safetensors.torch import load_file

    from tunewright.continual.config import load_continual_config
    from tunewright.continual.sequence import run_sequence
    from tunewright.lab.tiny import make_tiny_model

    quiet = lambda *a: None  # noqa: E731
    record = {"name": "continual_ewc_sweep", "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
              "load_start": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
              "model": "tiny random llama (lab/tiny.py: hidden 64, 2 layers, vocab 2000)",
              "setup": {"lr": LR, "steps_per_task": STEPS, "batch": 4, "train_rows": TRAIN_ROWS, "test_rows": TEST_ROWS,
                        "method": "full", "optimizer": "adamw"}, "runs": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = str(make_tiny_model(folder / "tiny", "llama"))
        fisher_scale = None
        for scenario in SCENARIOS:  # the same runs scored two ways: the test told the row's task or not
            for k in [0.0, *SCALES]:
                weight = 0.0 if k == 0 else k / (LR * fisher_scale["max"])
                start = time.perf_counter()
                name = f"{scenario}-k{k}"
                result = run_sequence(load_continual_config(raw=_config(folder, model, weight, name, scenario)), "ewc",
                                      quiet)
                run = folder / "runs" / name / "ewc"
                if fisher_scale is None:  # the first task's Fisher and anchor (the same first task for every λ)
                    saved = run / "0-sentiment" / "final" / "regularizers" / "ewc.safetensors"
                    fisher_scale = _fisher(load_file(saved))
                record["runs"].append({"scenario": scenario, "k": k, "weight": weight, "R": result["R"],
                                       "zero_shot": result["zero_shot"], "first_task_retention": result["R"][1][0],
                                       "second_task": result["R"][1][1],
                                       "top_fisher_moved": _moved(run, fisher_scale),
                                       "seconds": round(time.perf_counter() - start, 1)})
                print(json.dumps(record["runs"][-1]), flush=True)
    record["fisher"] = {k: v for k, v in fisher_scale.items() if k != "weights"}
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["load_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "continual_ewc_sweep.json").write_text(json.dumps(record, indent=1) + "\n")
    (RESULTS / "continual_ewc_sweep.md").write_text("\n".join(markdown(record)) + "\n")
    print(f"wrote {RESULTS / 'continual_ewc_sweep'}.json and .md in {record['seconds']} s")


def markdown(record: dict) -> list[str]:
    f, s = record["fisher"], record["setup"]
    lines = [f"Recorded {record['date_utc']} UTC on {record['cpu_count']} CPU cores shared with other jobs, under load "
             f"(load average {record['load_start'][0]} at the start, {record['load_end'][0]} at the end; "
             f"{record['torch_threads']} torch thread; torch {record['torch']}); "
             f"{record['seconds'] / 60:.1f} min in all. "
             f"Model: {record['model']}, {s['method']} fine-tuning, {s['steps_per_task']} steps of "
             f"{s['batch']} rows a task at lr {s['lr']} ({s['train_rows']} training and {s['test_rows']} test rows a "
             f"task: shrunk to fit the shared machine). The first task's Fisher: mean {f['mean']:.3g}, max "
             f"{f['max']:.3g} over {f['parameters']:,} weights; λ = k / (lr · max F).", "",
             "| scenario | k | λ | R after task 1 (sentiment, topics) | R after task 2 | first task retained R[1][0] | "
             "second task R[1][1] | max \\|θ − θ*\\| of the 10 top-F weights |",
             "|---|---|---|---|---|---|---|---|"]
    for r in record["runs"]:
        lines.append(f"| {r['scenario']} | {r['k']:g} | {r['weight']:.3g} | {r['R'][0][0]:.3f}, {r['R'][0][1]:.3f} | "
                     f"{r['R'][1][0]:.3f}, {r['R'][1][1]:.3f} | {r['first_task_retention']:.3f} | "
                     f"{r['second_task']:.3f} | {r['top_fisher_moved']:.2e} |")
    return lines


if __name__ == "__main__":
    main()
