"""The memory estimator's activations against the bytes autograd actually saves for backward, on the
default model, and the course's table of three large models beside the estimator.

    python -m benchmarks.memory_estimate                    # seq 256/512 x batch 1/4 x ckpt off/on, lora and full
    python -m benchmarks.memory_estimate --methods lora --seqs 256

Measured: one forward (through causal_lm's loss, as training runs it) and one backward per
setting, with `torch.autograd.graph.saved_tensors_hooks` recording every tensor saved for
backward; bytes of unique storages, parameters excluded. Under gradient checkpointing the
checkpoint's own hooks take the blocks' saved tensors (they are recomputed in backward) and the
checkpoint keeps each block's input alive: those inputs are counted too (a forward pre-hook on each
block), which is what the estimator's `activations` counts; its `recompute` (one block, rebuilt in
backward) is shown beside it, not measured. Writes results/memory_estimate.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 2 ** 20


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(model, batch: dict, blocks) -> int:
    """Bytes of unique non-parameter storages saved for backward by one forward of the causal LM loss."""
    import torch

    from tunewright.objectives import causal_lm

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def keep(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and storage.device.type != "meta":
            saved[storage.data_ptr()] = storage.nbytes()

    def pack(t):
        keep(t)
        return t

    def block_input(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        keep(hidden)

    handles = [b.register_forward_pre_hook(block_input, with_kwargs=True) for b in blocks] \
        if blocks is not None else []
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss, _ = causal_lm.loss(model, batch, causal_lm.Config(), None)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    model.zero_grad(set_to_none=True)
    return sum(saved.values())


def run(methods: list[str], seqs: list[int], batches: list[int]) -> dict:
    import torch

    from tunewright.models.load import ModelConfig, enable_checkpointing, load_model
    from tunewright.models.memory import estimate
    from tunewright.models.methods import METHOD_CONFIGS, METHODS

    rows = []
    name = ModelConfig().name
    for method in methods:
        for ckpt in (False, True):
            torch.manual_seed(0)
            model = METHODS.get(method).apply(load_model(ModelConfig()), METHOD_CONFIGS[method](name=method),
                                              new_token_ids=[])
            if ckpt:
                enable_checkpointing(model)
            model.train()
            blocks = model.get_base_model().model.layers if hasattr(model, "get_base_model") else model.model.layers
            for seq in seqs:
                for b in batches:
                    ids = torch.randint(0, model.config.vocab_size, (b, seq), generator=torch.Generator().manual_seed(0))
                    batch = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}
                    t0 = time.perf_counter()
                    measured = measure(model, batch, blocks if ckpt else None)
                    seconds = time.perf_counter() - t0
                    e = estimate(name, METHOD_CONFIGS[method](name=method), seq=seq, batch=b, checkpointing=ckpt)
                    rows.append({"method": method, "seq": seq, "batch": b, "checkpointing": ckpt,
                                 "measured_mib": round(measured / MiB, 2),
                                 "estimated_mib": round(e.activations / MiB, 2),
                                 "recompute_mib": round(e.recompute / MiB, 2),
                                 "error": round(e.activations / measured - 1, 4), "seconds": round(seconds, 1)})
                    print(rows[-1], flush=True)
            del model
    return {"model": name, "rows": rows}


def markdown(record: dict) -> str:
    r0 = record
    lines = [f"Activations saved for backward: estimate (models/memory.py) against measurement "
             f"(saved_tensors_hooks, unique storages, parameters excluded), {r0['model']}, fp32, sdpa, "
             f"causal_lm fused cross-entropy, one forward + backward each; recorded {r0['date_utc']} on 2 "
             f"shared cores under load (load average {r0['load_start']} at start, {r0['load_end']} at end; "
             f"OMP_NUM_THREADS={r0['omp_threads']}); `python -m benchmarks.memory_estimate`.",
             "", "| method | seq | batch | checkpointing | measured MiB | estimated MiB | error | + recomputed block (est.) |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in record["rows"]:
        lines.append(f"| {r['method']} | {r['seq']} | {r['batch']} | {'on' if r['checkpointing'] else 'off'} | "
                     f"{r['measured_mib']:.1f} | {r['estimated_mib']:.1f} | {r['error']:+.1%} | "
                     f"{r['recompute_mib']:.1f} |")
    if "course" in record:
        lines += ["", "The course's table (PEFT README: A100 80GB, ought/raft twitter_complaints) beside "
                  "`tunewright estimate --course`:", "", record["course"]["markdown"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["lora", "full"])
    parser.add_argument("--seqs", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    args = parser.parse_args(argv)
    from tunewright.models.memory import course_table

    record = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "load_start": _load(),
              "omp_threads": os.environ.get("OMP_NUM_THREADS"), "command": "python -m benchmarks.memory_estimate"}
    t0 = time.perf_counter()
    record.update(run(args.methods, args.seqs, args.batches))
    rows, md = course_table()
    record["course"] = {"rows": rows, "markdown": md}
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["load_end"] = _load()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory_estimate.json").write_text(json.dumps(record, indent=1) + "\n")
    (RESULTS / "memory_estimate.md").write_text(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
