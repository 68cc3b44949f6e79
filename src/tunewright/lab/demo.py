"""`tunewright demo`: the main job end to end on a model built on the spot, offline.

Until the default model (SmolLM2-135M-Instruct) lands, the demo LoRA-tunes `tiny-llama` on the
bundled Alpaca sample: it shows the held-out loss before and after, and what the tuned model
answers to a few training prompts (a random tiny model memorises; it does not generalise).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["run_demo"]


def run_demo(out_dir: Path, steps: int = 60) -> dict:
    from tunewright.config import load_config
    from tunewright.eval.generate import generate
    from tunewright.lab.samples import samples_dir
    from tunewright.models.load import load_trained
    from tunewright.run import train
    from tunewright.train.logging import read_metrics

    recipe = samples_dir().parent / "alpaca_lora.yaml"
    cfg = load_config(recipe, [f"output.dir={out_dir}", "output.name=demo", "output.overwrite=true",
                               f"train.max_steps={steps}", "eval.steps=20",
                               f"data.datasets.0.path={samples_dir() / 'alpaca_sample.jsonl'}"])
    t0 = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - t0
    evals = [m for m in read_metrics(result.run_dir) if "eval_loss" in m]
    rows = [json.loads(line) for line in (samples_dir() / "alpaca_sample.jsonl").read_text().splitlines()[:3]]
    model, tokenizer = load_trained(result.final_dir)
    answers = generate(model, tokenizer, [r["instruction"] for r in rows], template=tokenizer.chat_template,
                       max_new_tokens=40)
    print(f"\nheld-out loss: {evals[0]['eval_loss']:.3f} (step 0) -> {evals[-1]['eval_loss']:.3f} "
          f"(step {evals[-1]['step']}); {result.steps} steps in {seconds:.0f} s")
    for row, answer in zip(rows, answers):
        print(f"\n> {row['instruction']}\n  expected: {row['output'][:100]}\n  tuned:    {answer.strip()[:100]}")
    print(f"\nrun folder: {result.run_dir}  (adapter: {result.final_dir})")
    return {"eval_before": evals[0]["eval_loss"], "eval_after": evals[-1]["eval_loss"], "seconds": seconds}
