"""Generation speed: `tunewright generate`'s batching against plain transformers `generate`.

    python -m benchmarks.generation [--model smollm2-135m-instruct] [--per-task 8] [--max-new 48] [--levers]

Same model, same prompts (an evaluation file mixing four lab tasks of different prompt lengths, in a
fixed shuffled order), greedy, KV cache, batch 8, in the precision `train.mixed_precision: auto`
picks on this machine. Plain transformers takes the prompts in the file's order (each batch padded
to its longest prompt); ours sorts them by length first. Both are checked against plain transformers
one prompt at a time (no padding at all): greedy outputs must be identical in fp32.
Writes benchmarks/results/generation.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
TASKS = ("arithmetic", "extraction", "world_qa", "dialogue_summary")  # short to long prompts


def prompts(per_task: int, tmp: Path) -> list[list[dict]]:
    from tunewright.lab.export import export_task
    rows = []
    for task in TASKS:
        export_task(task, tmp / task, seed=0, overwrite=True, n_train=per_task, n_val=per_task, n_test=per_task)
        for line in (tmp / task / "test.jsonl").read_text().splitlines()[:per_task]:
            r = json.loads(line)
            rows.append([{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}".strip()}])
    random.Random(0).shuffle(rows)
    return rows


def plain_generate(model, tok, messages: list[list[dict]], batch: int, max_new: int, **extra) -> list[list[int]]:
    """What a user writes with transformers alone: chat template, left padding, generate per batch
    (`extra`: more generate() arguments, e.g. a static cache)."""
    tok.padding_side = "left"
    out = []
    for start in range(0, len(messages), batch):
        texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages[start:start + batch]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=tok.pad_token_id, **extra)
        out += [row[enc["input_ids"].shape[1]:].tolist() for row in gen]
    return out


def new_tokens(rows: list[list[int]], eos: set[int]) -> int:
    """Tokens generated up to and including each row's first end token."""
    n = 0
    for row in rows:
        for t in row:
            n += 1
            if t in eos:
                break
    return n


def strip(row: list[int], eos: set[int]) -> list[int]:
    cut = next((i for i, t in enumerate(row) if t in eos), len(row))
    return row[:cut]


def main() -> None:
    import tempfile

    from tunewright.config import ModelConfig
    from tunewright.eval.generate import generate
    from tunewright.models.load import load_model, load_tokenizer
    from tunewright.training.precision import resolve_precision

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--per-task", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--levers", action="store_true",
                    help="also transformers with a static KV cache, and with it torch.compile (CPU too)")
    args = ap.parse_args()
    load_before = os.getloadavg()

    precision, why = resolve_precision("auto", cpu=not torch.cuda.is_available())
    tok = load_tokenizer(ModelConfig(name=args.model))
    model = load_model(ModelConfig(name=args.model)).eval()
    eos = {t for t in [tok.eos_token_id, *([model.generation_config.eos_token_id] if isinstance(
        model.generation_config.eos_token_id, int) else model.generation_config.eos_token_id or [])] if t is not None}
    with tempfile.TemporaryDirectory() as tmp:
        messages = prompts(args.per_task, Path(tmp))
    lengths = [len(tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"]) for m in messages]

    def ours_ids():
        texts = generate(model, tok, messages, template=tok.chat_template, max_new_tokens=args.max_new,
                         batch_size=args.batch)
        return [tok(t, add_special_tokens=False)["input_ids"] for t in texts], texts

    def timed(fn):
        seconds = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                res = fn()
            seconds.append(time.perf_counter() - t)
        return res, statistics.median(seconds)

    alone_rows, alone_s = timed(lambda: plain_generate(model, tok, messages, 1, args.max_new))
    plain_rows, plain_s = timed(lambda: plain_generate(model, tok, messages, args.batch, args.max_new))
    (_, ours_texts), ours_s = timed(ours_ids)
    levers = []
    if args.levers:
        from transformers import CompileConfig
        compiled = CompileConfig(mode="default")  # "reduce-overhead" means CUDA graphs
        compiled._compile_all_devices = True  # transformers compiles on CUDA-like devices only, unless told
        for name, extra in [("transformers generate, static KV cache", {"cache_implementation": "static"}),
                            ("transformers generate, static KV cache + torch.compile",
                             {"cache_implementation": "static", "compile_config": compiled})]:
            t = time.perf_counter()
            first = plain_generate(model, tok, messages, args.batch, args.max_new, **extra)  # compiles, if it does
            first_s = time.perf_counter() - t
            rows_, seconds = timed(lambda: plain_generate(model, tok, messages, args.batch, args.max_new, **extra))
            texts = [tok.decode(strip(r, eos), skip_special_tokens=True) for r in rows_]
            levers.append((name, first_s, seconds, texts, rows_ == first))
    reference = [tok.decode(strip(r, eos), skip_special_tokens=True) for r in alone_rows]
    plain_texts = [tok.decode(strip(r, eos), skip_special_tokens=True) for r in plain_rows]
    n_new = new_tokens(alone_rows, eos)

    def padding(order: list[int]) -> float:
        pad = sum(max(lengths[i] for i in order[s:s + args.batch]) - lengths[i]
                  for s in range(0, len(order), args.batch) for i in order[s:s + args.batch])
        return pad / sum(lengths)

    rows = [
        {"system": "transformers generate, one prompt at a time", "batch": 1, "seconds": alone_s,
         "tokens_per_s": n_new / alone_s, "identical_to_one_at_a_time": len(messages), "prompt_padding": 0.0},
        {"system": "transformers generate, batches in file order", "batch": args.batch, "seconds": plain_s,
         "tokens_per_s": n_new / plain_s, "identical_to_one_at_a_time": sum(a == b for a, b in zip(plain_texts, reference)),
         "prompt_padding": padding(list(range(len(messages))))},
        {"system": "tunewright generate (length-sorted batches)", "batch": args.batch, "seconds": ours_s,
         "tokens_per_s": n_new / ours_s, "identical_to_one_at_a_time": sum(a == b for a, b in zip(ours_texts, reference)),
         "prompt_padding": padding(sorted(range(len(messages)), key=lambda i: -lengths[i]))},
    ]
    for name, first_s, seconds, texts, stable in levers:
        rows.append({"system": f"{name} (first pass {first_s:.1f} s, not counted)", "batch": args.batch,
                     "seconds": seconds, "tokens_per_s": n_new / seconds, "first_pass_s": first_s,
                     "identical_to_one_at_a_time": sum(a == b for a, b in zip(texts, reference)),
                     "prompt_padding": padding(list(range(len(messages)))), "same_as_first_pass": stable})
    record = {"model": args.model, "precision": precision, "precision_why": why, "prompts": len(messages),
              "tasks": TASKS, "prompt_tokens": {"min": min(lengths), "median": statistics.median(lengths),
                                                "max": max(lengths)},
              "max_new_tokens": args.max_new, "generated_tokens": n_new, "repeats": args.repeats, "rows": rows,
              "ours_over_plain_batched": plain_s / ours_s, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "load_before": load_before, "load_after": os.getloadavg(),
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": "python -m benchmarks.generation " + " ".join(
                  f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items() if v is not False)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"Generation, {args.model}, {precision} ({why}), {len(messages)} prompts from {', '.join(TASKS)} "
             f"(prompt tokens {min(lengths)}-{max(lengths)}), greedy, up to {args.max_new} new tokens, KV cache; "
             f"{n_new} tokens generated; median of {args.repeats}; load average {load_before[0]:.1f} before, "
             f"{record['load_after'][0]:.1f} after; {record['date']}; `{record['command']}`", "",
             "| system | batch | seconds | tokens/s | × batched transformers | prompt padding | identical to one at a time |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['batch']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} | "
                     f"{plain_s / r['seconds']:.2f} | {r['prompt_padding']:.0%} | {r['identical_to_one_at_a_time']}/{len(messages)} |")
    (RESULTS / "generation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
