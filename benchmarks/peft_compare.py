"""The course's comparison of parameter-efficient methods, recorded: every family on the lab's
sentiment task, the same steps, scored by label scoring.

    python -m benchmarks.peft_compare                       # the default model; results/peft_compare.*
    python -m benchmarks.peft_compare --steps 8 --n-test 40 # shorter
    python -m benchmarks.peft_compare --smoke               # tiny-llama, 2 steps: the harness itself

Each configuration trains in its own fresh process (`--one NAME`), so its peak memory is its own:
`tunewright.run.train` on the lab's `sentiment` rows as chat turns ("<instruction>\\n\\n<review>" ->
"positive"/"negative"), then, on the saved final/ folder read back as `tunewright generate` reads
it: accuracy and AUC by label scoring on the held-out test rows (`score_classification`: the
probability of each label after the prompt, no generation), greedy generation speed (tokens forced
to a fixed count), the size of the weight files in final/, trainable parameters (counted on the
meta device) and the process's peak resident memory during training. A `base` row scores the
untrained model. BitFit is listed with the reason it does not apply (Llama has no biases).

Every row trains the same number of steps on the same rows in the same order; the learning rate is
each family's usual one (a soft prompt needs a hundred times LoRA's), written in the table.
Results: one JSON line per row in `results/peft_compare.jsonl`, the table in `results/peft_compare.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

INSTRUCTION = "Is the following product review positive or negative? Answer with one word."
INIT_TEXT = "Classify if the review is positive or negative."  # the course's wording, for this task
LABELS = ["positive", "negative"]
RESULTS = Path(__file__).resolve().parent / "results"

# name -> (method section, learning rate, what the row shows)
ROWS: dict[str, tuple[dict | None, float | None, str]] = {
    "base": (None, None, "the untrained model"),
    "full": ({"name": "full"}, 5e-5, "every parameter"),
    "selective-last4": ({"name": "selective", "last_k_layers": 4}, 1e-4, "the last 4 blocks"),
    "bitfit": ({"name": "selective", "bias_only": True}, 1e-3, "biases only"),
    "lora-r4": ({"name": "lora", "r": 4, "lora_alpha": 8, "target_modules": "all-linear"}, 5e-4, "all linear"),
    "lora-r8": ({"name": "lora", "r": 8, "lora_alpha": 16, "target_modules": "all-linear"}, 5e-4, "all linear"),
    "lora-r16": ({"name": "lora", "r": 16, "lora_alpha": 32, "target_modules": "all-linear"}, 5e-4, "all linear"),
    "lora-r32": ({"name": "lora", "r": 32, "lora_alpha": 64, "target_modules": "all-linear"}, 5e-4, "all linear"),
    "lora-r16-qv": ({"name": "lora", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]}, 5e-4,
                    "q_proj, v_proj only"),
    "dora-r16": ({"name": "lora", "r": 16, "lora_alpha": 32, "target_modules": "all-linear", "use_dora": True}, 5e-4,
                 "all linear"),
    "prompt-text": ({"name": "prompt", "prompt_tuning_init": "text", "prompt_tuning_init_text": INIT_TEXT}, 3e-2,
                    f"init {INIT_TEXT!r}"),
    "prefix-20": ({"name": "prefix", "num_virtual_tokens": 20}, 1e-2, "20 key/value pairs per layer"),
    "ia3": ({"name": "ia3"}, 5e-3, "k, v, down_proj (peft's default)"),
    "bottleneck-pfeiffer": ({"name": "bottleneck", "placement": "pfeiffer", "reduction_factor": 16}, 1e-3,
                            "after each feed-forward, m = d/16"),
    # the memory rows (README Memory): lora-r16-qv's adapter on a 4-bit base, with 8-bit AdamW, and on the CPU
    "qlora-r16-qv": ({"name": "lora", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]}, 5e-4,
                     "lora-r16-qv on an NF4 base (double quant, fp32 compute)"),
    "lora-r16-qv-adamw8bit": ({"name": "lora", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]},
                              5e-4, "lora-r16-qv with 8-bit AdamW"),
    "cola-r16-qv": ({"name": "cola", "r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj"]}, 5e-4,
                    "lora-r16-qv's adapters on the CPU (ColA)"),
}
# what a row changes outside its method section
SETTINGS: dict[str, dict] = {
    "qlora-r16-qv": {"model": {"load_in_4bit": True, "quantization": {"compute_dtype": "float32"}}},
    "lora-r16-qv-adamw8bit": {"train": {"optimizer": "adamw_8bit"}},
}

SETUPS = {  # model, steps, batch, test rows, generated tokens, torch threads
    # one thread: on 2 cores shared with other jobs (load average ~10) a LoRA step of the default model
    # took 100-150 s on two threads and 21-26 s on one (2026-11-30), as the tests found for tiny models
    "real": {"model": "smollm2-135m-instruct", "steps": 6, "batch": 4, "n_test": 32, "gen_tokens": 8,
             "template": None, "threads": 1},
    "smoke": {"model": "tiny-llama", "steps": 2, "batch": 4, "n_test": 8, "gen_tokens": 4,
              "template": "alpaca",  # tiny-llama's tokenizer has no chat template and prompt tuning refuses added tokens
              "method": {"selective-last4": {"last_k_layers": 1}}},  # tiny-llama has 2 blocks
}


def _load() -> str:
    """The 1, 5 and 15 minute load averages (`uptime`'s): the cores are shared, so the table says how busy."""
    try:
        return " ".join(open("/proc/loadavg", encoding="ascii").read().split()[:3])
    except OSError:
        return "n/a"


def write_data(work: Path, n_train: int, n_test: int) -> Path:
    """The sentiment task's rows as chat turns: train.jsonl and test.jsonl under `work/data`."""
    from tunewright.lab.tasks_classify import sentiment

    splits = sentiment(seed=0, n_train=n_train, n_val=1, n_test=n_test)
    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in splits[split]:
                turns = [{"role": "user", "content": f"{INSTRUCTION}\n\n{row['text']}"},
                         {"role": "assistant", "content": row["label"]}]
                f.write(json.dumps({"messages": turns}) + "\n")
    return folder


def recipe(name: str, setup: dict, work: Path) -> dict:
    method, lr, _ = ROWS[name]
    method = {**method, **setup.get("method", {}).get(name, {})}
    cfg = {
        "model": {"name": setup["model"]},
        "data": {"datasets": [{"path": str(work / "data" / "train.jsonl"), "format": "messages"}],
                 "cutoff_len": 256, "template": setup["template"], "cache_dir": str(work / "cache")},
        "method": method,
        "train": {"batch_size": setup["batch"], "micro_batch_size": setup["batch"], "max_steps": setup["steps"],
                  "learning_rate": lr, "lr_scheduler": "constant", "warmup_steps": 2, "seed": 0},
        "output": {"dir": str(work / "runs"), "name": name, "overwrite": True},
    }
    for section, values in SETTINGS.get(name, {}).items():
        cfg[section] = {**cfg[section], **values}
    return cfg


def _weights_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".bin"))


def _generate_speed(model, tokenizer, record: dict, n_tokens: int) -> float:
    """Greedy new tokens per second, batch 1, exactly `n_tokens` each (EOS suppressed until then),
    over two prompts after a one-token warm-up."""
    import torch

    from tunewright.eval.generate import prompt_ids

    prompts = [f"{INSTRUCTION}\n\nThe battery is superb. Delivery took three days.",
               f"{INSTRUCTION}\n\nHonestly, the design is not lovely. A waste of money."]
    timed, tokens = 0.0, 0
    for i, text in enumerate([prompts[0], *prompts]):
        n = n_tokens if i else 1
        ids = torch.tensor([prompt_ids(text, tokenizer, tokenizer.chat_template, record.get("raw_text", False),
                                       record.get("system_prompt"))])
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id
                                 if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        if i:  # the first is a warm-up
            timed += time.perf_counter() - start
            tokens += out.shape[1] - ids.shape[1]
    return tokens / timed


def measure(name: str, setup: dict, work: Path) -> dict:
    """Train row `name` (unless it is `base`), then score and time what it saved. One JSON-able dict."""
    import torch

    if setup.get("threads"):
        torch.set_num_threads(setup["threads"])

    from tunewright.config import as_run_config
    from tunewright.errors import ConfigError
    from tunewright.eval.scoring import score_classification
    from tunewright.models.inspect import inspect_counts
    from tunewright.models.trained import load_trained, run_record

    method, lr, note = ROWS[name]
    row = {"name": name, "method": (method or {}).get("name", "none"), "note": note, "learning_rate": lr,
           "steps": 0 if method is None else setup["steps"], "batch": setup["batch"], "model": setup["model"],
           "threads": setup.get("threads") or torch.get_num_threads()}
    if method is None:  # the untrained model: its process's peak (load, score, generate) is the floor
        target, record = setup["model"], {}
        peak_train = None
        trainable, total = 0, None
        train_tok_s = None
    else:
        cfg = as_run_config(recipe(name, setup, work))
        try:
            trainable, total = inspect_counts(cfg.model.name, cfg.method)
        except ConfigError as err:  # a method that does not apply to this model (BitFit on a Llama): the row says why
            row["skipped"] = str(err).splitlines()[0]
            return row
        from tunewright.run import train

        start = time.perf_counter()
        result = train(cfg)
        row["train_s"] = round(time.perf_counter() - start, 1)
        peak_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        logged = [json.loads(line) for line in open(result.run_dir / "metrics.jsonl", encoding="utf-8")]
        steps = [m for m in logged if "tokens_per_s" in m]
        train_tok_s = steps[-1]["tokens_per_s"]
        row.update(first_loss=steps[0]["loss"], last_loss=steps[-1]["loss"])
        target = str(result.final_dir)
        record = run_record(target)
        row["checkpoint_bytes"] = _weights_bytes(result.final_dir)
    if method is None:  # a model name, not a folder: loaded as training loads its base
        from tunewright.config import ModelConfig
        from tunewright.models.load import load_model, load_tokenizer

        model, tokenizer = load_model(ModelConfig(name=target)).eval(), load_tokenizer(ModelConfig(name=target))
    else:
        model, tokenizer = load_trained(target)
    if total is None:
        total = sum(p.numel() for p in model.parameters())
    test = [json.loads(line) for line in open(work / "data" / "test.jsonl", encoding="utf-8")]
    start = time.perf_counter()
    scores = score_classification(model, tokenizer, [r["messages"][0]["content"] for r in test], LABELS,
                                  [r["messages"][1]["content"] for r in test], tokenizer.chat_template,
                                  positive="positive", raw=record.get("raw_text", False),
                                  system_prompt=record.get("system_prompt"))
    row.update(trainable=trainable, total=total, trainable_pct=100.0 * trainable / total,
               peak_rss_train_bytes=peak_train, train_tokens_per_s=train_tok_s,
               generate_tokens_per_s=round(_generate_speed(model, tokenizer, record, setup["gen_tokens"]), 2),
               accuracy=scores["accuracy"], auc=scores["auc"], n_test=scores["n"],
               peak_rss_process_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               score_s=round(time.perf_counter() - start, 1))
    return row


# ---------------------------------------------------------------- the table

def _mb(n) -> str:
    return "" if n is None else f"{n / 2**20:,.1f}"


def _rate(n) -> str:
    return "" if n is None else f"{n:,.0f}"


def table(rows: list[dict]) -> str:
    lines = ["| row | method | what | lr | trainable | % | peak RSS MB | train tok/s | generate tok/s | "
             "accuracy | AUC | checkpoint MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lr = "" if r.get("learning_rate") is None else f"{r['learning_rate']:g}"
        if "skipped" in r or "failed" in r:
            why = f"not applicable: {r['skipped']}" if "skipped" in r else f"failed: {r['failed']}"
            lines.append(f"| {r['name']} | {r['method']} | {r['note']} | {lr} | {why} | | | | | | | |")
            continue
        lines.append(
            f"| {r['name']} | {r['method']} | {r['note']} | {lr} | {_rate(r['trainable'] or None)} | "
            f"{_format_share(r)} | {_mb(r.get('peak_rss_train_bytes') or r.get('peak_rss_process_bytes'))} | "
            f"{_rate(r.get('train_tokens_per_s'))} | "
            f"{r['generate_tokens_per_s']:.1f} | {r['accuracy']:.3f} | {r['auc']:.3f} | "
            f"{_mb(r.get('checkpoint_bytes'))} |")
    return "\n".join(lines)


def _format_share(r: dict) -> str:
    pct = r["trainable_pct"]
    return "" if not r["trainable"] else "<0.01" if pct < 0.01 else f"{pct:.2f}"


def run_all(names: list[str], setup_name: str, work: Path, out: Path | None, isolate: bool = True) -> list[dict]:
    """Every row of `names`, each in its own process when `isolate`; writes `out`.jsonl and .md."""
    setup = SETUPS[setup_name]
    write_data(work, setup["steps"] * setup["batch"], setup["n_test"])
    load_start, start = _load(), time.perf_counter()
    rows = []
    for name in names:
        if isolate:
            done = subprocess.run([sys.executable, "-m", "benchmarks.peft_compare", "--one", name, "--setup-json",
                                   json.dumps(setup), "--work", str(work)], capture_output=True, text=True,
                                  cwd=Path(__file__).resolve().parents[1])
            if done.returncode != 0:  # recorded as failed, with its last line; the other rows still run
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                rows.append({"name": name, "method": (ROWS[name][0] or {}).get("name", "none"), "note": ROWS[name][2],
                             "learning_rate": ROWS[name][1], "failed": last})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        else:
            rows.append(measure(name, setup, work))
        print(f"{name}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    meta = {"setup": setup_name, **setup, "wall_s": round(wall, 1), "load_start": load_start, "load_end": _load(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_count": os.cpu_count()}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.with_suffix(".jsonl"), "w", encoding="utf-8") as f:
            f.write(json.dumps({"meta": meta}) + "\n")
            for r in rows:
                f.write(json.dumps(r) + "\n")
        caption = (f"{meta['date']}, {setup['model']}, {setup['steps']} steps of {setup['batch']} rows for every "
                   f"trained row (constant lr after 2 warm-up steps), {setup['n_test']} held-out test rows, "
                   f"torch on {setup.get('threads') or 'all'} thread(s), {meta['cpu_count']} CPU cores shared with other jobs (load average {load_start} at the start, "
                   f"{meta['load_end']} at the end); wall time {wall / 60:.1f} min. Peak RSS: the process's resident-set peak "
                   f"up to the end of training (base: loading, scoring and generating only); generate tok/s: greedy, "
                   f"batch 1, {setup['gen_tokens']} new tokens; checkpoint: the weight files in final/.\n\n"
                   f"`python -m benchmarks.peft_compare{'' if setup_name == 'real' else ' --setup ' + setup_name}` "
                   f"({'one fresh process per row' if isolate else 'every row in one process: peak RSS is cumulative'})\n")
        out.with_suffix(".md").write_text(caption + "\n" + table(rows) + "\n", encoding="utf-8")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help="Measure this row only and print its JSON line (used per process)")
    parser.add_argument("--only", help="Comma-separated rows (default: all)")
    parser.add_argument("--setup", default="real", choices=sorted(SETUPS))
    parser.add_argument("--setup-json", help=argparse.SUPPRESS)  # the parent's setup, for --one
    parser.add_argument("--threads", type=int, help="torch threads (default: the setup's)")
    parser.add_argument("--smoke", action="store_true", help="Same as --setup smoke")
    parser.add_argument("--steps", type=int, help="Optimizer steps per trained row")
    parser.add_argument("--n-test", type=int, help="Held-out rows scored")
    parser.add_argument("--in-process", action="store_true", help="Every row in this process (peak memory is then shared)")
    parser.add_argument("--work", type=Path, default=Path("runs/peft_compare"), help="Data and run folders")
    parser.add_argument("--out", type=Path, default=None, help="Results stem (default results/peft_compare)")
    args = parser.parse_args(argv)
    setup_name = "smoke" if args.smoke else args.setup
    for key, value in (("steps", args.steps), ("n_test", args.n_test), ("threads", args.threads)):
        if value is not None:
            SETUPS[setup_name][key] = value
    if args.one:
        setup = json.loads(args.setup_json) if args.setup_json else SETUPS[setup_name]
        print(json.dumps(measure(args.one, setup, args.work)))
        return 0
    names = args.only.split(",") if args.only else list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    default_out = RESULTS / ("peft_compare" if setup_name == "real" else f"peft_compare-{setup_name}")
    run_all(names, setup_name, args.work, args.out or default_out, isolate=not args.in_process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
