"""Recorded comparison for recipes/distill.yaml: the demo's tuned SmolLM2-135M-Instruct (30 blocks)
teaches a student cut to its first 15 blocks, against hard-label SFT of the same student for the
same steps. Writes benchmarks/results/distill_student/{results.json, report.md}.

    OMP_NUM_THREADS=1 python -m benchmarks.distill_student [--teacher-steps 20] [--steps 16]

1. the teacher: `tunewright demo` (runs/demo, trained on runs/demo-data) when runs/demo/final is
   missing, with --teacher-steps steps
2. the students, one after the other, each timed: recipes/distill.yaml (distill objective) and the
   same recipe with `objective={name: causal_lm}` (the labels alone), both --steps steps
3. on the demo's held-out test rows (people never seen in training), for the teacher and both
   students: exact match of greedy answers and the answers' tokens/s; held-out token loss (CE of the
   reference answer's tokens); mean KL(teacher || student) per answer token at T = 1; parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "distill_student"
RECIPE = ROOT / "recipes" / "distill.yaml"


def _generate(model, tokenizer, rows, max_new_tokens=48) -> tuple[list[str], float]:
    """Greedy answers to the test prompts (as the demo asks them) and new tokens per second."""
    from tunewright.lab.demo import _answers

    t0 = time.perf_counter()
    answers = _answers(model, tokenizer, tokenizer.chat_template, rows, max_new_tokens)
    seconds = time.perf_counter() - t0
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)  # + its end token
    return answers, tokens / seconds


def _held_out(model, teacher, rows_cfg) -> tuple[float, float]:
    """(token loss, mean KL(teacher || student) at T = 1) per reference answer token of the test rows,
    encoded as training encodes them."""
    import torch

    from tunewright.objectives import causal_lm, distill
    from tunewright.objectives.reference import Reference
    from tunewright.run import build

    built = build(rows_cfg, with_model=False)
    rows = built.data.train
    cfg = distill.Config(teacher="unused", temperature=1.0, alpha=0.5)
    kl = ce = tokens = 0.0
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            batch = causal_lm.collate([[e] for e in rows[start:start + 8]], built.tokenizer.pad_token_id, False)
            _, parts = distill.loss(model, batch, cfg, Reference(teacher))
            kl, ce, tokens = kl + float(parts["kl"]), ce + float(parts["ce"]), tokens + causal_lm.count(batch)
    return ce / tokens, kl / tokens


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher-steps", type=int, default=20)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import os

    os.chdir(ROOT)  # the recipe names runs/demo-data relative to the repository
    from tunewright.applied.record import Recording
    from tunewright.config import load_config
    from tunewright.eval.metrics import corpus_scores
    from tunewright.lab.demo import run_demo
    from tunewright.models.load import base_model
    from tunewright.models.params import count_parameters
    from tunewright.models.trained import load_trained
    from tunewright.run import train

    command = (f"OMP_NUM_THREADS=1 python -m benchmarks.distill_student --teacher-steps {args.teacher_steps} "
               f"--steps {args.steps}")
    rec = Recording(OUT, "Distillation into a 15-block student vs hard-label SFT of it", command)
    notes = []
    if not (ROOT / "runs" / "demo" / "final").is_dir():
        t0 = time.perf_counter()
        run_demo(ROOT / "runs", steps=args.teacher_steps, eval_steps=args.teacher_steps)
        notes.append(f"teacher: `tunewright demo --steps {args.teacher_steps}` trained here, "
                     f"{(time.perf_counter() - t0) / 60:.1f} min (with its before/after generation)")
    else:
        notes.append("teacher: the existing runs/demo (tunewright demo)")
    shrink = [f"train.max_steps={args.steps}", f"eval.steps={args.steps}", "eval.at_start=false",
              "output.overwrite=true"]
    students = {"distill": ["output.name=distill_student_kd"],
                "SFT (labels only)": ["objective={name: causal_lm}", "output.name=distill_student_sft"]}
    runs, walls = {}, {}
    for name, overrides in students.items():
        t0 = time.perf_counter()
        runs[name] = train(load_config(RECIPE, overrides + shrink)).run_dir
        walls[name] = time.perf_counter() - t0

    test = [json.loads(line) for line in (ROOT / "runs" / "demo-data" / "test.jsonl").read_text().splitlines()]
    references = [r["output"] for r in test]
    rows_cfg = load_config(RECIPE, ["data.datasets=[{path: runs/demo-data/test.jsonl, format: alpaca}]",
                                    "data.eval_datasets=[]"])
    teacher, tokenizer = load_trained(ROOT / "runs" / "demo")
    models = {"teacher (30 blocks, demo LoRA)": ROOT / "runs" / "demo", **runs}
    for name, folder in models.items():
        model, tok = (teacher, tokenizer) if folder == ROOT / "runs" / "demo" else load_trained(folder)
        answers, speed = _generate(model, tok, test)
        loss, kl = _held_out(model, teacher, rows_cfg)
        total = count_parameters(base_model(model))[1]
        rec.add(model=name, exact_match=round(corpus_scores(answers, references)["exact_match"], 3),
                held_out_token_loss=round(loss, 4), mean_kl_to_teacher=round(kl, 4),
                train_wall_min=round(walls[name] / 60, 1) if name in walls else "",
                blocks=base_model(model).config.num_hidden_layers, params_M=round(total / 1e6, 1),
                generate_tokens_per_s=round(speed, 1), sample=answers[0])
    notes += [f"students: recipes/distill.yaml (model.layers: 15, LoRA r=16 all-linear, T=2, alpha=0.5) and the same "
              f"with objective causal_lm, {args.steps} steps of 8 rows each (shrunk from the recipe's 40 to fit the "
              f"time on shared cores); teacher {args.teacher_steps} steps (the demo's 40 shrunk alike)",
              f"held-out: the demo's {len(test)} test rows (people never seen in training); exact match of greedy "
              f"answers (48 new tokens at most); token loss = CE of the reference answer tokens; KL(teacher || "
              f"student) at T = 1 per answer token",
              "generate tokens/s: greedy, batches of 10, one torch thread; parameters include the 28M tied "
              "embedding, so halving the blocks does not halve them",
              "recorded on 2 CPU cores shared with other sessions' jobs, under load (see the load averages): wall "
              "times and tokens/s are of this machine as it was"]
    rec.write(["model", "exact_match", "held_out_token_loss", "mean_kl_to_teacher", "train_wall_min", "blocks",
               "params_M", "generate_tokens_per_s"], notes)


if __name__ == "__main__":
    main(sys.argv[1:])
