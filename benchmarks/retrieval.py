"""Recorded figures of recipes/retrieval.yaml: Recall@1/5/10 and MRR on the retrieval lab task's
held-out test rows before (step 0) and after contrastive tuning, for all-MiniLM-L6-v2 (mean pooling,
full fine-tune) and for the default model SmolLM2-135M-Instruct as an embedder (last-token pooling,
LoRA). Writes benchmarks/results/retrieval/{results.json, report.md}.

    OMP_NUM_THREADS=1 python -m benchmarks.retrieval [--steps 12] [--default-steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "retrieval"
RECIPE = ROOT / "recipes" / "retrieval.yaml"
KEYS = ("recall@1", "recall@5", "recall@10", "mrr")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--default-steps", type=int, default=6)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    os.chdir(ROOT)  # the recipe names its data relative to the repository
    from tunewright.applied.record import Recording
    from tunewright.config import load_config
    from tunewright.run import train
    from tunewright.training.logging import read_metrics

    runs = {
        "all-MiniLM-L6-v2 (mean, full)": [f"train.max_steps={args.steps}", f"eval.steps={args.steps}",
                                          "output.name=retrieval_minilm"],
        "SmolLM2-135M-Instruct (last token, LoRA r=16)": [
            "model.name=smollm2-135m-instruct", "objective.pooling=last",
            "method={name: lora, r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}",
            "train.learning_rate=2.0e-4", "train.batch_size=8", "train.micro_batch_size=8",
            f"train.max_steps={args.default_steps}", f"eval.steps={args.default_steps}",
            "output.name=retrieval_smollm2"],
    }
    command = (f"OMP_NUM_THREADS=1 python -m benchmarks.retrieval --steps {args.steps} "
               f"--default-steps {args.default_steps}")
    rec = Recording(OUT, "Retrieval: contrastive tuning, before -> after, on held-out entities", command)
    for name, overrides in runs.items():
        t0 = time.perf_counter()
        result = train(load_config(RECIPE, [*overrides, "output.overwrite=true"]))
        wall = time.perf_counter() - t0
        evals = [m for m in read_metrics(result.run_dir) if "eval_mrr" in m]
        before, after = evals[0], evals[-1]
        assert before["step"] == 0 and after["step"] == result.steps
        rec.add(model=name, command=f"tunewright train recipes/retrieval.yaml {' '.join(overrides)}",
                steps=result.steps, wall_min=round(wall / 60, 1),
                **{k: f"{before[f'eval_{k}']:.3f} -> {after[f'eval_{k}']:.3f}" for k in KEYS},
                raw={"before": before, "after": after})
    test_rows = sum(1 for _ in (ROOT / "recipes" / "data" / "retrieval" / "test.jsonl").open())
    rec.write(["model", "steps", *KEYS, "wall_min"], [
        f"test rows: {test_rows} questions about people and products no training row mentions; each ranks the "
        f"paragraphs of every test row (one paragraph per entity, so copies tie and never push the right one down)",
        f"training: recipes/retrieval.yaml (480 training pairs, each with a hard negative about a similar entity; "
        f"temperature 0.05, in-batch negatives; batches of 16, of 8 for the default model), {args.steps} and "
        f"{args.default_steps} steps: shrunk from the recipe's 30 to fit the time on shared cores",
        "recorded on 2 CPU cores shared with other sessions' jobs, under load (see the load averages): wall times "
        "are of this machine as it was; the commands are in results.json"])
    print(json.dumps(rec.rows, indent=1, default=str)[:3000])


if __name__ == "__main__":
    main(sys.argv[1:])
