"""The benchmark driver: one fresh process per configuration, results appended as they finish.

    python -m benchmarks.run --suite cpu                 # SmolLM2-135M, fp32, this machine's cores
    python -m benchmarks.run --suite cpu-best            # the same, each system at its fastest (fp32, bf16)
    python -m benchmarks.run --suite gpu [--only 8b]     # 0.5B/1B/8B shapes, bf16, one GPU
    python -m benchmarks.run --suite gpu-context         # longest context at batch 1 under a memory cap
    python -m benchmarks.run --suite gpu-lease           # what fits a 15-minute GPU lease (no compile)
    python -m benchmarks.run --suite ci --out DIR        # a tiny model: checks the harness

A fresh process per configuration keeps one system's allocator state, compiled kernels and
imports from flattering or penalising the next. A configuration with `candidates` is "the best
setting that fits": its candidates are tried in order and the first that does not run out of
memory is recorded (with what was tried).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _row(label: str, system: str, settings: str, **spec) -> dict:
    return {"label": label, "system": system, "settings": settings, **spec}


def _group(name: str, shape: str, workload: str, seq: int, batch: int, precision: str, steps: int, warmup: int,
           rows: list[dict], **common) -> list[dict]:
    specs = []
    for r in rows:
        # one data file per group: rows that change seq (a packing cutoff) or batch read the same rows
        spec = {"shape": shape, "workload": workload, "seq": seq, "batch": batch, "precision": precision,
                "steps": steps, "warmup": warmup, "data_seq": seq, "data_rows": batch * steps, **common, **r}
        spec["group"], spec["id"] = name, f"{name}/{r['label']}"
        specs.append(spec)
    return specs


# The rows every dense group runs. B0 = Trainer + PEFT with checkpointing (the reference);
# "ours, same flags" keeps checkpointing on too (and is the step-1 parity row); "ours" is our
# defaults; the "best" rows take the fastest setting that fits in memory.
def _dense_rows(gpu: bool, ours_best: list[dict]) -> list[dict]:
    rows = [_row("B0", "hf", "Trainer+PEFT, grad ckpt, padding collator", gradient_checkpointing=True),
            _row("B0 best", "hf", "Trainer+PEFT, best that fits",
                 candidates=[{"gradient_checkpointing": False, "torch_compile": True,
                              "settings": "Trainer+PEFT, no ckpt, torch_compile"},
                             {"gradient_checkpointing": False, "settings": "Trainer+PEFT, no ckpt"},
                             {"gradient_checkpointing": True, "settings": "Trainer+PEFT, grad ckpt"}])]
    if gpu:
        rows += [_row("B1", "hf_liger", "B0 + Liger kernels", gradient_checkpointing=True),
                 _row("B1 best", "hf_liger", "B0 + Liger, best that fits",
                      candidates=[{"gradient_checkpointing": False, "torch_compile": True,
                                   "settings": "B0 + Liger, no ckpt, torch_compile"},
                                  {"gradient_checkpointing": False, "settings": "B0 + Liger, no ckpt"},
                                  {"gradient_checkpointing": True, "settings": "B0 + Liger, grad ckpt"}])]
    rows += [_row("ours, same flags", "ours", "grad ckpt (as B0)", gradient_checkpointing=True, parity=True),
             _row("ours", "ours", "defaults"),
             _row("ours best", "ours", "best that fits", candidates=ours_best)]
    return rows


def _varlen_rows(gpu: bool, packed_rows: int, packed_len: int) -> list[dict]:
    """B0 pads its batches; ours packs them padding-free. Packing is compared at B0's flags (grad
    ckpt on) so its effect is not mixed with checkpointing's, then with our defaults + packing."""
    rows = [_row("B0", "hf", "Trainer+PEFT, grad ckpt, padding collator", gradient_checkpointing=True),
            _row("ours, padded", "ours", "padding, as B0's batches, grad ckpt", gradient_checkpointing=True, parity=True),
            _row("ours, packed", "ours", f"packing into {packed_len}-token rows, grad ckpt",
                 packing=True, batch=packed_rows, seq=packed_len, gradient_checkpointing=True),
            _row("ours, packed, no ckpt", "ours", f"defaults + packing into {packed_len}-token rows",
                 packing=True, batch=packed_rows, seq=packed_len)]
    if gpu:
        rows.insert(1, _row("B1", "hf_liger", "B0 + Liger kernels", gradient_checkpointing=True))
    return rows


def suite(name: str) -> list[dict]:
    """The configurations of a suite."""
    if name == "ci":  # a tiny model, the fewest processes that still cross every path of the harness
        dense = [_row("B0", "hf", "Trainer+PEFT, grad ckpt, padding collator", gradient_checkpointing=True),
                 _row("ours, same flags", "ours", "grad ckpt (as B0)", gradient_checkpointing=True, parity=True),
                 _row("ours best", "ours", "best that fits", candidates=[{"settings": "defaults"}])]
        varlen = [_row("B0", "hf", "Trainer+PEFT, padding collator"),
                  _row("ours, packed", "ours", "padding-free packing into 512-token rows", packing=True, batch=1, seq=512)]
        # varlen rows average ~180 tokens under the 256 cap: 3 packed rows of 512 need ~9 of them
        return (_group("tiny dense 64x4", "tiny", "dense", 64, 4, "fp32", 3, 1, dense, threads=2)
                + _group("tiny varlen", "tiny", "varlen", 256, 4, "fp32", 3, 1, varlen, threads=2, data_rows=24))
    if name == "cpu":  # the CPU reference: SmolLM2-135M, seq 256 x batch 8, fp32, 2 cores
        # On a CPU every setting fits, so instead of "best that fits" each lever gets its own row.
        dense = [_row("B0", "hf", "Trainer+PEFT, grad ckpt, padding collator", gradient_checkpointing=True),
                 _row("B0 no ckpt", "hf", "Trainer+PEFT, no ckpt (B0's fastest)"),
                 _row("ours, same flags", "ours", "grad ckpt (as B0)", gradient_checkpointing=True, parity=True),
                 _row("ours", "ours", "defaults: no ckpt, fused head+CE, fused AdamW"),
                 _row("ours, chunked CE", "ours", "defaults but objective.cross_entropy=chunked",
                      ours={"objective.cross_entropy": "chunked"}),
                 _row("ours, full CE", "ours", "defaults but objective.cross_entropy=full",
                      ours={"objective.cross_entropy": "full"}),
                 _row("ours, half ckpt", "ours", "grad ckpt on half the blocks", gradient_checkpointing=True,
                      ours={"model.checkpoint_layers": "0.5"}),
                 _row("ours, compile", "ours", "defaults + model.compile", ours={"model.compile": "true"})]
        common = dict(threads=os.cpu_count())
        return (_group("smollm2-135m dense 256x8", "smollm2-135m", "dense", 256, 8, "fp32", 6, 2, dense, **common)
                # 96 rows (~30k tokens) hold 6 steps of 4 rows and of one 1024-token packed row
                + _group("smollm2-135m varlen x4", "smollm2-135m", "varlen", 1024, 4, "fp32", 6, 1,
                         _varlen_rows(False, 1, 1024), data_rows=96, **common))
    if name == "cpu-best":  # issue 14: each system at its fastest setting, fp32 and bf16, in one run
        # bf16 rows run 2 steps (1 warm-up, 1 timed): on a CPU without AMX/AVX512-BF16 a bf16 step
        # takes minutes, and one timed step is enough to rank rows several times apart. `twin`
        # names the fp32 row whose step-1 loss a bf16 row must match within 1e-2 (relative).
        bf16 = dict(precision="bf16", steps=2, warmup=1)
        dense = [_row("B0", "hf", "Trainer+PEFT fp32, grad ckpt", gradient_checkpointing=True),
                 _row("B0 no ckpt", "hf", "Trainer+PEFT fp32, no ckpt"),
                 _row("B0 bf16", "hf", "Trainer+PEFT bf16=True, bf16 weights, no ckpt", twin="B0 no ckpt", **bf16),
                 _row("B0 bf16 ckpt", "hf", "Trainer+PEFT bf16=True, bf16 weights, grad ckpt", twin="B0",
                      gradient_checkpointing=True, **bf16),
                 _row("ours", "ours", "defaults: fp32, no ckpt, fused head+CE, fused AdamW"),
                 _row("ours bf16", "ours", "train.mixed_precision=bf16 (autocast), fp32 weights", twin="ours",
                      ours={"model.dtype": "float32"}, **bf16),
                 _row("ours bf16 base", "ours", "train.mixed_precision=bf16, frozen base in bf16, adapters fp32",
                      twin="ours", **bf16)]
        varlen = [_row("B0", "hf", "Trainer+PEFT fp32, grad ckpt, padded", gradient_checkpointing=True),
                  _row("B0 no ckpt", "hf", "Trainer+PEFT fp32, no ckpt, padded"),
                  _row("B0 bf16", "hf", "Trainer+PEFT bf16=True, bf16 weights, no ckpt, padded", twin="B0 no ckpt",
                       **bf16),
                  _row("ours", "ours", "defaults + packing into 1024-token rows (fp32, no ckpt)",
                       packing=True, batch=1, seq=1024),
                  _row("ours bf16 base", "ours", "as ours, frozen base in bf16, adapters fp32", twin="ours",
                       packing=True, batch=1, seq=1024, **bf16)]
        common = dict(threads=os.cpu_count())
        return (_group("smollm2-135m dense 256x8", "smollm2-135m", "dense", 256, 8, "fp32", 6, 2, dense, **common)
                + _group("smollm2-135m varlen x4", "smollm2-135m", "varlen", 1024, 4, "fp32", 6, 1, varlen,
                         data_rows=96, **common))
    if name == "gpu":
        best = [{"settings": "no ckpt, regional compile", "ours": {"model.compile": "true"}},
                {"settings": "ckpt half the blocks, compile", "gradient_checkpointing": True,
                 "ours": {"model.compile": "true", "model.checkpoint_layers": "0.5"}},
                {"settings": "grad ckpt, compile", "gradient_checkpointing": True, "ours": {"model.compile": "true"}}]
        common = dict(threads=None)
        # most important first (the targets), so a short session measures what matters
        return (_group("llama-8b dense 2048x2", "llama-8b", "dense", 2048, 2, "bf16", 12, 4, _dense_rows(True, best), **common)
                # 1200 rows (~380k tokens) hold 12 steps of 16 rows and of two 4096-token packed rows
                + _group("llama-1b varlen x16", "llama-1b", "varlen", 2048, 16, "bf16", 12, 4,
                         _varlen_rows(True, 2, 4096), data_rows=1200, **common)
                + _group("llama-1b dense 2048x4", "llama-1b", "dense", 2048, 4, "bf16", 12, 4, _dense_rows(True, best), **common)
                + _group("llama-8b long 8192x1", "llama-8b", "long", 8192, 1, "bf16", 8, 3, _dense_rows(True, best), **common)
                + _group("qwen-0.5b dense 2048x8", "qwen-0.5b", "dense", 2048, 8, "bf16", 12, 4, _dense_rows(True, best), **common))
    if name == "gpu-lease":  # the gpu suite's first two groups at each system's fastest uncompiled setting
        # Compiling an 8B model takes minutes, more than a 15-minute lease can give; the fastest rows
        # come first so that a cut-off run has measured the best-against-best comparison.
        dense = [_row("B0 no ckpt", "hf", "Trainer+PEFT bf16, no ckpt"),
                 _row("ours", "ours", "defaults: bf16, no ckpt, fused head+CE, fused AdamW"),
                 _row("ours, liger", "ours", "defaults + model.liger (RMSNorm, RoPE, SwiGLU kernels)",
                      ours={"model.liger": "true"}),
                 _row("B1 no ckpt", "hf_liger", "Trainer+PEFT bf16 + Liger kernels, no ckpt"),
                 _row("B0", "hf", "Trainer+PEFT bf16, grad ckpt", gradient_checkpointing=True),
                 _row("ours, same flags", "ours", "grad ckpt (as B0)", gradient_checkpointing=True, parity=True)]
        varlen = [_row("B0 no ckpt", "hf", "Trainer+PEFT bf16, no ckpt, padding collator"),
                  _row("B1 no ckpt", "hf_liger", "Trainer+PEFT bf16 + Liger kernels, no ckpt, padding collator"),
                  _row("ours, packed, no ckpt", "ours", "defaults + packing into 4096-token rows",
                       packing=True, batch=2, seq=4096),
                  _row("ours, packed, liger", "ours", "packing into 4096-token rows + model.liger",
                       packing=True, batch=2, seq=4096, ours={"model.liger": "true"}),
                  _row("B0", "hf", "Trainer+PEFT bf16, grad ckpt, padding collator", gradient_checkpointing=True)]
        common = dict(threads=None)
        return (_group("llama-8b dense 2048x2", "llama-8b", "dense", 2048, 2, "bf16", 12, 4, dense, **common)
                + _group("llama-1b varlen x16", "llama-1b", "varlen", 2048, 16, "bf16", 12, 4, varlen,
                         data_rows=1200, **common))
    raise SystemExit(f"unknown suite {name!r}; known: ci, cpu, cpu-best, gpu, gpu-lease, gpu-context")


CONTEXT_LADDER = [4096, 8192, 12288, 16384, 24576, 32768, 49152, 65536]


def context_probes() -> list[dict]:
    """Longest context for 8B LoRA at batch 1 under a 40 GiB cap, each system at its leanest setting."""
    common = dict(shape="llama-8b", workload="long", batch=1, precision="bf16", steps=2, warmup=1,
                  memory_cap_gib=40, gradient_checkpointing=True, threads=None)
    return [{**common, "label": "B0", "system": "hf", "settings": "Trainer+PEFT, grad ckpt"},
            {**common, "label": "B1", "system": "hf_liger", "settings": "B0 + Liger, grad ckpt"},
            {**common, "label": "ours", "system": "ours", "settings": "grad ckpt + activation offload",
             "ours": {"model.activation_offload": "true"}}]


# ---------------------------------------------------------------- processes

def _child_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _spawn(command: str, payload: dict, timeout: float) -> dict:
    """Run `python -m benchmarks.run child <spec>` in a fresh process; its result file -> dict."""
    out = Path(payload["workdir"]) / "results" / f"{time.time_ns()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "result_path": str(out)}
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.run", command, json.dumps(payload)], cwd=ROOT,
                              env=_child_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "error": f"over {timeout:.0f} s"}
    # each process's output is kept beside its result: a failed row on a lent machine is read afterwards
    log = out.with_suffix(".log")
    log.write_text(f"# {payload.get('id')}\n{proc.stdout}\n{proc.stderr}")
    if out.is_file():
        return json.loads(out.read_text())
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    oom = "out of memory" in (proc.stderr or "").lower()
    return {"status": "oom" if oom else "error", "error": tail[0][:300]}


def prepare(spec: dict) -> dict:
    """(In the child.) The model folder and workload file of a spec, written by the first child
    that needs them (random weights once per shape and dtype, so every system loads the same)."""
    from benchmarks.shapes import prepare_model
    from benchmarks.workloads import write_workload
    from tunewright.config import ModelConfig
    from tunewright.models.load import load_tokenizer

    root = Path(spec["workdir"])
    model = prepare_model(spec["shape"], root, "bfloat16" if spec["precision"] == "bf16" else "float32")
    rows, seq = spec.get("data_rows", spec["batch"] * spec["steps"]), spec.get("data_seq", spec["seq"])
    data = root / "data" / f"{spec['shape']}-{spec['workload']}-{seq}-{rows}.jsonl"
    if not data.is_file():
        write_workload(spec["workload"], load_tokenizer(ModelConfig(name=model)), seq, rows, data)
    return {"model": model, "data": str(data)}


def run_spec(spec: dict, timeout: float) -> dict:
    """Run one configuration; for `candidates`, the first that does not run out of memory."""
    tried = []
    for candidate in spec.get("candidates") or [{}]:
        attempt = {**spec, **candidate}
        attempt.pop("candidates", None)
        result = {**_identity(attempt), **_spawn("child", attempt, timeout)}
        tried.append(f"{attempt.get('settings')}: {result.get('status')}")
        if result.get("status") != "oom":
            break
    if spec.get("candidates"):
        result["tried"] = tried
    return result


def _identity(spec: dict) -> dict:
    return {k: spec[k] for k in ("id", "group", "label", "system", "settings", "shape", "workload", "seq",
                                 "batch", "parity", "probe", "twin") if k in spec}


def probe(spec: dict, ladder: list[int], timeout: float) -> dict:
    """Longest sequence of `ladder` that trains at batch 1 under the cap (stops at the first OOM)."""
    longest, oom_at, env = None, None, {}
    for seq in ladder:
        result = run_spec({**spec, "seq": seq, "id": f"probe {spec['label']} {seq}", "group": "probe"}, timeout)
        if result.get("status") != "ok":
            oom_at = f"{seq} ({result.get('status')})"
            break
        longest, env = seq, result.get("env", {})
    return {"id": f"probe/{spec['label']}", "probe": True, "label": spec["label"], "system": spec["system"],
            "settings": spec["settings"], "longest": longest, "oom_at": oom_at,
            "memory_cap_gib": spec["memory_cap_gib"], "status": "ok", "env": env}


def _peak(spec: dict) -> tuple[float, str]:
    """The device's peak FLOP/s for MFU, once per suite and precision (see measure.peak_flops)."""
    import torch

    from benchmarks import measure

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else torch.float32
    return measure.peak_flops(device, dtype, spec.get("threads"))


def _chosen(name: str, only: list[str]) -> bool:
    """`--only` texts: a part of the id, or its end when the text ends with `$`."""
    return not only or any(name.endswith(t[:-1]) if t.endswith("$") else t in name for t in only)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child":  # inside a fresh process
        payload = json.loads(argv[1])
        from benchmarks.systems import run
        result = run({**payload, **prepare(payload)})
        Path(payload["result_path"]).write_text(json.dumps(result))
        return 0

    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, help="ci, cpu, cpu-best, gpu, gpu-lease or gpu-context")
    parser.add_argument("--only", action="append", default=[],
                        help="run only configurations whose id contains this text, or ends with it if it "
                        "ends with $ (repeatable)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for <suite>.jsonl and <suite>.md")
    parser.add_argument("--name", default=None, help="file name of the results (default: the suite's), e.g. "
                        "to keep a repeat of some rows apart from the main table")
    parser.add_argument("--workdir", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "tunewright-bench"),
                        help="model weights, data and run folders (large for the GPU shapes)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    parser.add_argument("--ladder", default=None, help="gpu-context: comma-separated sequence lengths to try "
                        f"(default {','.join(map(str, CONTEXT_LADDER))})")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or args.suite
    jsonl, md = out / f"{name}.jsonl", out / f"{name}.md"
    command = "python -m benchmarks.run " + " ".join(argv)
    if args.suite == "gpu-context":
        specs = [s for s in context_probes() if _chosen(s["label"], args.only)]
    else:
        specs = [s for s in suite(args.suite) if _chosen(s["id"], args.only)]
    ladder = [int(n) for n in args.ladder.split(",")] if args.ladder else CONTEXT_LADDER
    peaks = {}
    for spec in specs:
        spec["workdir"] = args.workdir
        if spec["precision"] not in peaks:
            peaks[spec["precision"]] = _peak(spec)
        spec["peak_flops"] = peaks[spec["precision"]]
        started = time.perf_counter()
        result = probe(spec, ladder, args.timeout) if args.suite == "gpu-context" else run_spec(spec, args.timeout)
        result["date"], result["command"] = time.strftime("%Y-%m-%d"), command
        with open(jsonl, "a") as f:  # appended as each finishes: a cut-off run keeps what it measured
            f.write(json.dumps(result) + "\n")
        shown = f"{result['tokens_per_s']:.1f} tok/s" if "tokens_per_s" in result else result.get("status")
        print(f"{result['id']}: {shown} ({time.perf_counter() - started:.0f} s)", flush=True)

    from benchmarks.report import markdown, read
    md.write_text(markdown(read(jsonl), f"Benchmark: {args.suite} suite", command))
    print(f"wrote {jsonl} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
