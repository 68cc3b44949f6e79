"""Where the time of one training step goes: torch.profiler on ours and on Trainer + PEFT, side by side.

    python -m benchmarks.profile_step [--precision fp32 bf16] [--top 15]

The cpu suite's dense workload (SmolLM2-135M, LoRA r16 on all 7 projections, seq 256 x batch 8),
each system at its fastest setting of that precision (no gradient checkpointing; ours with its
defaults). Steps 1 and 2 warm up; step 3 of 4 is recorded, from the end of optimizer step 2 to the
end of optimizer step 3 (a global optimizer-step hook, so both systems are cut at the same place),
and ops are ranked by self CPU time. Writes benchmarks/results/profile_cpu.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from benchmarks import systems
from benchmarks.run import RESULTS, prepare

SYSTEMS = {"ours": "tunewright, defaults (fused head + CE, fused AdamW)", "hf": "Trainer + PEFT, no ckpt"}


def profile(system: str, precision: str, workdir: str, top: int) -> dict:
    """One recorded step of `system`: its top ops by self CPU time and the step's wall time."""
    spec = {"id": f"profile/{system}-{precision}", "group": "profile", "label": system, "system": system,
            "shape": "smollm2-135m", "workload": "dense", "seq": 256, "batch": 8, "precision": precision,
            "steps": 4, "warmup": 1, "data_seq": 256, "data_rows": 32, "workdir": workdir}
    spec.update(prepare(spec))
    cfg = systems._config(spec)
    examples, _, _ = systems.plan_tokens(cfg)
    schedule = torch.profiler.schedule(wait=1, warmup=1, active=1, repeat=1)
    marks: list[float] = []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], schedule=schedule) as prof:
        def step_done(*_):
            marks.append(time.perf_counter())
            prof.step()
        hook = register_optimizer_step_post_hook(step_done)
        try:
            systems.run_ours(spec, cfg) if system == "ours" else systems.run_hf(spec, cfg, examples)
        finally:
            hook.remove()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return {"system": system, "settings": SYSTEMS[system], "precision": precision,
            "step_s": marks[2] - marks[1], "self_cpu_total_ms": total / 1e3,
            "ops": [{"name": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
                     "calls": e.count} for e in events[:top]]}


def markdown(record: dict) -> str:
    lines = [f"One training step, profiled (torch.profiler, CPU, ops by self time; step 3 of 4). {record['date']}, "
             f"{record['threads']} threads, {record['cpu']}, load average {record['load_before'][0]:.1f} before and "
             f"{record['load_after'][0]:.1f} after; `{record['command']}`", ""]
    for precision in record["precisions"]:
        ours, hf = (next(p for p in record["profiles"] if p["system"] == s and p["precision"] == precision)
                    for s in ("ours", "hf"))
        lines += [f"**{precision}**: ours {ours['step_s']:.2f} s/step ({ours['settings']}), Trainer + PEFT "
                  f"{hf['step_s']:.2f} s/step ({hf['settings']})", "",
                  "| # | ours: op | ms | share | calls | Trainer + PEFT: op | ms | share | calls |",
                  "|---:|---|---:|---:|---:|---|---:|---:|---:|"]
        for i, (a, b) in enumerate(zip(ours["ops"], hf["ops"]), 1):
            lines.append(f"| {i} | `{a['name']}` | {a['self_ms']:.0f} | {a['share']:.1%} | {a['calls']} | "
                         f"`{b['name']}` | {b['self_ms']:.0f} | {b['share']:.1%} | {b['calls']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--workdir", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "tunewright-bench"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()
    profiles = [profile(s, p, args.workdir, args.top) for p in args.precision for s in SYSTEMS]
    record = {"precisions": args.precision, "profiles": profiles, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "load_before": load_before, "load_after": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": "python -m benchmarks.profile_step --precision " + " ".join(args.precision)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_cpu.json").write_text(json.dumps(record, indent=1) + "\n")
    (RESULTS / "profile_cpu.md").write_text(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
