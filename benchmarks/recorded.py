"""Recorded figures of the instruction-data recipes (multi-task with a held-out task, self-instruct,
the summarization comparison): run their `tunewright` commands one after another, each in a fresh
process, and write `results/NAME.json` (commands, wall time of each, load average before and after,
versions, the scores) and `results/NAME.md` (the table quoted in the README).

    python -m benchmarks.recorded multitask            # recipes/multitask.yaml + its held-out eval
    python -m benchmarks.recorded self_instruct        # the bundled seed tasks on the default model
    python -m benchmarks.recorded dialogue_summary     # zero-shot vs full fine-tune vs LoRA
    python -m benchmarks.recorded continual_forgetting # recipes/continual_forgetting.yaml: its three compares

Extra arguments after the name are appended to every train command (overrides that shrink a run,
e.g. `train.max_steps=30`; continual commands get them too); they are recorded with the rest. Wall times are of this machine as it
was: the load average is recorded because the cores may be shared.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TW = [sys.executable, "-c", "import sys; from tunewright.cli import main; sys.exit(main())"]

SUITES = {
    "multitask": {
        "commands": [["train", "recipes/multitask.yaml", "output.overwrite=true"],
                     ["eval", "recipes/eval/multitask_heldout.yaml", "--overwrite"]],
        "eval_dir": "runs/multitask_heldout",
    },
    "dialogue_summary": {
        "commands": [["train", "recipes/dialogue_summary.yaml", "output.overwrite=true"],
                     ["train", "recipes/dialogue_summary.yaml", "method={name: full}", "train.learning_rate=5.0e-5",
                      "output.name=dialogue_summary_full", "output.overwrite=true"],
                     ["eval", "recipes/eval/dialogue_summary_compare.yaml", "--overwrite"]],
        "eval_dir": "runs/dialogue_summary_compare",
    },
    # the recipe's three compares: class-incremental (full fine-tuning), task-incremental with the
    # regularizers and LwF, and LoRA (naive LoRA, and one adapter per task)
    "continual_forgetting": {
        "commands": [["continual", "compare", "recipes/continual_forgetting.yaml", "output.overwrite=true",
                      "--strategies", "naive,replay,generative_replay,joint"],
                     ["continual", "compare", "recipes/continual_forgetting.yaml", "scenario=task_incremental",
                      "output.name=continual_forgetting_task", "output.overwrite=true",
                      "--strategies", "naive,ewc,si,mas,lwf"],
                     ["continual", "compare", "recipes/continual_forgetting.yaml", "method={name: lora}",
                      "train.learning_rate=1.0e-3", "output.name=continual_forgetting_lora", "output.overwrite=true",
                      "--strategies", "naive,adapters"]],
        "continual_dirs": ["runs/continual_forgetting", "runs/continual_forgetting_task",
                           "runs/continual_forgetting_lora"],
    },
    "self_instruct": {
        "commands": [["data", "self-instruct", "--seeds", "recipes/data/self_instruct_seeds.jsonl",
                      "--out", "runs/self_instruct/grown.jsonl", "--overwrite"]],
        "grown": "runs/self_instruct/grown.jsonl",
    },
}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _versions() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "machine": platform.processor() or platform.machine()}


def _run(cmd: list[str], log) -> dict:
    """One tunewright command in its own process; its output goes to the log, its time to the record."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    start, load = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), _load()
    t0 = time.perf_counter()
    out = subprocess.run(TW + cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = round(time.perf_counter() - t0, 1)
    log.write(f"$ tunewright {' '.join(cmd)}\n{out.stdout}\n[{seconds} s, rc {out.returncode}]\n\n")
    log.flush()
    if out.returncode:
        raise SystemExit(f"tunewright {' '.join(cmd)}: exit {out.returncode}; see the log")
    return {"command": "tunewright " + " ".join(cmd), "started_utc": start, "seconds": seconds,
            "load_before": load, "load_after": _load(), "output_tail": out.stdout[-3000:]}


def _eval_scores(eval_dir: Path) -> dict:
    results = json.loads((eval_dir / "results.json").read_text())
    keep = ("name", "source", "scores", "groups", "improvement", "seconds")
    return {"data": results["data"], "generation": results["generation"], "metrics": results["metrics"],
            "candidates": [{k: c[k] for k in keep if k in c} for c in results["candidates"]],
            "samples": results["samples"]}


def _grown(path: Path) -> dict:
    kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    dropped = [json.loads(line) for line in path.with_name(f"{path.stem}.dropped.jsonl").read_text().splitlines()
               if line.strip()]
    sys.path.insert(0, str(ROOT / "src"))
    from tunewright.data.instruction_filter import REASONS  # every reason, in the order they are tried

    counts = Counter(d["reason"] for d in dropped)
    return {"kept": len(kept), "dropped": len(dropped), "dropped_by_reason": {r: counts[r] for r in REASONS},
            "kept_rows": kept, "dropped_examples": dropped[:12]}


def _continual_results(folder: Path) -> dict:
    """results.json of the compare, and the scale of the Fisher EWC weighted (its λ is read against it)."""
    from safetensors.torch import load_file

    results = json.loads((folder / "results.json").read_text())
    state = folder / "ewc" / f"0-{results['tasks'][0]}" / "final" / "regularizers" / "ewc.safetensors"
    fisher = [t.flatten() for k, t in load_file(state).items() if k.startswith("importance/")] if state.is_file() else []
    if fisher:
        import torch
        flat = torch.cat(fisher).double()
        results["ewc_fisher"] = {"mean": float(flat.mean()), "max": float(flat.max()),
                                 "parameters": flat.numel()}
    return results


def main(argv: list[str]) -> None:
    if argv[:1] == ["--markdown"]:  # the table again from a recorded JSON
        return write_markdown(argv[1])
    if not argv or argv[0] not in SUITES:
        raise SystemExit(f"usage: python -m benchmarks.recorded {{{','.join(SUITES)}}} [train overrides...]")
    name, extra = argv[0], argv[1:]
    suite = SUITES[name]
    RESULTS.mkdir(exist_ok=True)
    record = {"name": name, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
              "extra_train_overrides": extra, "versions": _versions(), "load_start": _load(), "steps": []}
    t0 = time.perf_counter()
    with open(RESULTS / f"{name}.log", "w") as log:
        for cmd in suite["commands"]:
            record["steps"].append(_run(cmd + extra if cmd[0] in ("train", "continual") else cmd, log))
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["load_end"] = _load()
    if "eval_dir" in suite:
        record["eval"] = _eval_scores(ROOT / suite["eval_dir"])
        record["report_md"] = (ROOT / suite["eval_dir"] / "report.md").read_text()
    if "grown" in suite:
        record["self_instruct"] = _grown(ROOT / suite["grown"])
    if "continual_dirs" in suite:
        record["continual"] = {d: _continual_results(ROOT / d) for d in suite["continual_dirs"]}
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    write_markdown(name)
    print(f"wrote {RESULTS / name}.json and .md in {record['seconds']} s")


# ---------------------------------------------------------------- the tables

def _cell(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows)]


def _change(new: float, old: float) -> str:
    return f"{new - old:+.4f}" + (f" ({(new - old) / abs(old):+.1%})" if old else "")


def _caption(record: dict) -> str:
    steps = "; ".join(f"`{s['command']}` {s['seconds'] / 60:.1f} min" for s in record["steps"])
    v = record["versions"]
    return (f"Recorded {record['date_utc']} UTC on {v['cpu_count']} CPU cores shared with other jobs (load average "
            f"{record['load_start'][0]} at the start, {record['load_end'][0]} at the end; {v['torch_threads']} torch "
            f"thread(s) per process; torch {v['torch']}, "
            f"transformers {v['transformers']}): {steps}; {record['seconds'] / 60:.1f} min in all."
            + (f" Extra overrides: `{' '.join(record['extra_train_overrides'])}`." if record["extra_train_overrides"]
               else ""))


def _multitask(record: dict) -> list[str]:
    base, tuned = record["eval"]["candidates"]
    keys = list(base["scores"])
    rows = []
    for task, g in base["groups"].items():
        t = tuned["groups"][task]
        rows.append([task + (" (held out)" if task == "world_qa" else ""), g["rows"],
                     *(f"{g[k]:.3f} -> {t[k]:.3f}" for k in keys)])
    rows.append(["all", sum(g["rows"] for g in base["groups"].values()),
                 *(f"{base['scores'][k]:.3f} -> {tuned['scores'][k]:.3f}" for k in keys)])
    return _table(["task", "test rows", *(f"{k}: base -> tuned" for k in keys)], rows)


def _summary(record: dict) -> list[str]:
    cands = {c["name"]: c for c in record["eval"]["candidates"]}
    keys = list(cands["zero-shot"]["scores"])
    train = {"lora": record["steps"][0]["seconds"], "full": record["steps"][1]["seconds"]}
    rows = [[n, *(c["scores"][k] for k in keys), f"{train[n] / 60:.1f}" if n in train else "-",
             f"{c['seconds'] / 60:.1f}"] for n, c in cands.items()]
    for new, old in (("full", "zero-shot"), ("lora", "zero-shot"), ("lora", "full")):
        rows.append([f"{new} over {old}", *(_change(cands[new]["scores"][k], cands[old]["scores"][k]) for k in keys),
                     "", ""])
    return _table(["model", *keys, "train min", "eval min"], rows)


def _self_instruct(record: dict) -> list[str]:
    si = record["self_instruct"]
    total = si["kept"] + si["dropped"]
    rows = [["proposed", total], ["kept", si["kept"]],
            *([f"dropped: {r}", n] for r, n in si["dropped_by_reason"].items())]
    kept = [f"- {r['instruction']!r} (ROUGE-L {r['provenance']['rouge_l']} with {r['provenance']['nearest']!r})"
            for r in si["kept_rows"][:8]]
    return [*_table(["candidates", "count"], rows), "", "First kept instructions:", "", *kept]


def _continual(record: dict) -> list[str]:
    sys.path.insert(0, str(ROOT / "src"))
    from tunewright.continual.report import markdown_tables, probe_table

    lines = []
    notes = record.get("continual_notes", {})  # a compare run again apart from the recording, and why
    for folder, c in record["continual"].items():  # one compare each: its scenario, method and strategies
        lines += [f"## {folder}", "", *([notes[folder], ""] if folder in notes else []),
                  f"Scenario {c['scenario']}; tasks {', '.join(c['tasks'])}.", "",
                  *markdown_tables(c["strategies"], c["tasks"]), ""]
        probes = probe_table(c["strategies"])
        lines += [*probes, ""] if probes else []
        if "ewc_fisher" in c:
            f = c["ewc_fisher"]
            lines += [f"EWC's Fisher after the first task: mean {f['mean']:.3g}, max {f['max']:.3g} over "
                      f"{f['parameters']:,} weights.", ""]
    return lines


def write_markdown(name: str) -> None:
    record = json.loads((RESULTS / f"{name}.json").read_text())
    body = {"multitask": _multitask, "dialogue_summary": _summary, "self_instruct": _self_instruct,
            "continual_forgetting": _continual}[name](record)
    (RESULTS / f"{name}.md").write_text("\n".join([_caption(record), "", *body, ""]))


if __name__ == "__main__":
    main(sys.argv[1:])
