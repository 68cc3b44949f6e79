"""Recorded figures of the preference recipes on the lab's preference task (recipes/data/preferences:
the chosen answer is correct and concise; the rejected one wrong, padded with filler, or both,
named in `rejected_kind`), on the default model, shrunk to fit ~20 minutes on a busy CPU:

    python -m benchmarks.preferences reward    # recipes/reward_model.yaml, then `tunewright predict` on
                                               # the test pairs: accuracy by rejected_kind beside a
                                               # length-only scorer (the shorter answer wins)
    python -m benchmarks.preferences dpo       # recipes/dpo.yaml: held-out implicit-reward accuracy at
                                               # step 0 and at the end, the rate at which greedy answers
                                               # to held-out prompts follow the hidden rule before and
                                               # after, and a plot of rewards/margins per step

Writes results/preferences_NAME.json (commands, wall times, load averages, versions, the figures)
and results/preferences_NAME.md (the table quoted in the README); dpo also results/dpo_rewards.png.
Extra arguments after the name are appended to the train command.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from benchmarks.recorded import RESULTS, ROOT, _load, _run, _table, _versions
from benchmarks.recorded import _caption as recorded_caption

DATA = "recipes/data/preferences"
BENCH = "runs/preferences_bench"
# the held-out pairs are scored by predict afterwards, so the run itself evaluates nothing
REWARD_STEPS = ["train.max_steps=16", "data.eval_datasets=[]", "eval.steps=null", "eval.at_start=false"]
DPO_HELD_OUT = 32  # test pairs evaluated at step 0 and at the end (two passes, policy and reference)
DPO_STEPS = ["train.max_steps=60", "eval.steps=60",
             f"data.eval_datasets=[{{path: {BENCH}/heldout.jsonl, format: preference}}]"]
RULE_PROMPTS = 40  # held-out prompts answered greedily before and after DPO
KINDS = ("wrong", "verbose", "both")


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in (ROOT / path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _by_kind(rows: list[dict], right: list[float]) -> dict:
    """Mean of `right` (1 / 0.5 / 0 per pair) overall and for each rejected_kind."""
    out = {"all": sum(right) / len(right), "pairs": len(right)}
    for kind in KINDS:
        picked = [r for row, r in zip(rows, right) if row["rejected_kind"] == kind]
        out[kind] = sum(picked) / len(picked) if picked else None
        out[f"{kind}_pairs"] = len(picked)
    return out


def length_scorer(rows: list[dict]) -> list[float]:
    """A pair is right when the chosen answer is the shorter (characters); a tie counts one half."""
    return [1.0 if len(r["chosen"]) < len(r["rejected"]) else 0.5 if len(r["chosen"]) == len(r["rejected"]) else 0.0
            for r in rows]


def _greedy(path: str, rows: list[dict]) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from tunewright.data.templates import resolve_template
    from tunewright.eval.generate import generate
    from tunewright.lab.tasks_applied import follows_rule  # the task's hidden rule, the one PPO's figure uses
    from tunewright.models.aliases import resolve_model_name
    from tunewright.models.trained import load_trained

    t0 = time.perf_counter()
    model, tokenizer = load_trained(resolve_model_name(path))
    replies = generate(model, tokenizer, [r["prompt"] for r in rows], template=resolve_template(None, tokenizer),
                       max_new_tokens=32, batch_size=10)
    checks = [follows_rule(reply, r["chosen"]) for reply, r in zip(replies, rows)]
    n = len(rows)
    return {"model": path, "prompts": n, "follows_rule": sum(c and k for c, k in checks) / n,
            "correct": sum(c for c, _ in checks) / n, "concise": sum(k for _, k in checks) / n,
            "seconds": round(time.perf_counter() - t0, 1),
            "samples": [{"prompt": r["prompt"][-80:], "answer": r["chosen"], "reply": reply}
                        for r, reply in zip(rows[:8], replies[:8])]}


def reward(record: dict, extra: list[str], log) -> None:
    scores = f"{BENCH}/reward_test_scores.jsonl"
    (ROOT / scores).unlink(missing_ok=True)
    record["steps"].append(_run(["train", "recipes/reward_model.yaml", "output.overwrite=true", *REWARD_STEPS,
                                 *extra], log))
    record["steps"].append(_run(["predict", "runs/reward_model", "--data", f"{DATA}/test.jsonl", "--out", scores],
                                log))
    rows, scored = _rows(f"{DATA}/test.jsonl"), _rows(scores)
    right = [1.0 if s["chosen"] > s["rejected"] else 0.5 if s["chosen"] == s["rejected"] else 0.0 for s in scored]
    record["reward_model"] = _by_kind(rows, right)
    record["length_only"] = _by_kind(rows, length_scorer(rows))
    record["target"] = {"all": 0.80, "wrong": 0.65}


def dpo(record: dict, extra: list[str], log) -> None:
    from tunewright.eval.plots import plot_curves
    from tunewright.training.logging import read_metrics

    test = _rows(f"{DATA}/test.jsonl")
    (ROOT / BENCH).mkdir(parents=True, exist_ok=True)
    (ROOT / BENCH / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test[:DPO_HELD_OUT]))
    record["before"] = _greedy("smollm2-135m-instruct", test[-RULE_PROMPTS:])
    record["steps"].append(_run(["train", "recipes/dpo.yaml", "output.overwrite=true", *DPO_STEPS, *extra], log))
    record["after"] = _greedy(str(ROOT / "runs/dpo"), test[-RULE_PROMPTS:])
    metrics = read_metrics(ROOT / "runs/dpo")
    evals = [m for m in metrics if "eval_accuracy" in m]
    record["held_out"] = {"pairs": DPO_HELD_OUT, "evaluations": [
        {k: m[k] for k in ("step", "eval_loss", "eval_accuracy", "eval_margins", "eval_rewards/chosen",
                           "eval_rewards/rejected")} for m in evals]}
    record["train_curve"] = [{k: m[k] for k in ("step", "loss", "rewards/chosen", "rewards/rejected", "margins",
                                                "accuracy")} for m in metrics if "margins" in m]
    record["plot"] = "dpo_rewards.png"
    plot_curves(metrics, ["rewards/chosen", "rewards/rejected", "margins", "accuracy"], RESULTS / "dpo_rewards.png",
                title="DPO on the lab's preference pairs: training rewards per step")


SUITES = {"reward": reward, "dpo": dpo}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--markdown"]:
        return write_markdown(argv[1])
    if not argv or argv[0] not in SUITES:
        raise SystemExit(f"usage: python -m benchmarks.preferences {{{','.join(SUITES)}}} [train overrides...]")
    name, extra = argv[0], argv[1:]
    record = {"name": name, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
              "extra_train_overrides": extra, "versions": _versions(), "load_start": _load(), "steps": []}
    t0 = time.perf_counter()
    with open(RESULTS / f"preferences_{name}.log", "w") as log:
        SUITES[name](record, extra, log)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["load_end"] = _load()
    (RESULTS / f"preferences_{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    write_markdown(name)
    print(f"wrote {RESULTS}/preferences_{name}.json and .md in {record['seconds']} s")


# ---------------------------------------------------------------- the tables

def _caption(record: dict) -> str:
    return (f"{recorded_caption(record)} Shrunk (steps, held-out rows) to aim at ~20 minutes; the wall times "
            "above are those of the shared, loaded cores.")


def _pct(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def write_markdown(name: str) -> None:
    record = json.loads((RESULTS / f"preferences_{name}.json").read_text())
    if name == "reward":
        rm, length = record["reward_model"], record["length_only"]
        body = _table(["scorer", "all", *(f"rejected {k}" for k in KINDS)], [
            ["reward model (LoRA + head, 16 steps)", *(_pct(rm[k]) for k in ("all", *KINDS))],
            ["length only (shorter wins)", *(_pct(length[k]) for k in ("all", *KINDS))],
            ["pairs", rm["pairs"], *(rm[f"{k}_pairs"] for k in KINDS)],
            ["target", "0.80", "0.65", "", ""]])
        title = "Reward model: held-out pair accuracy on the lab's preference test split"
    else:
        first, last = record["held_out"]["evaluations"][0], record["held_out"]["evaluations"][-1]
        before, after = record["before"], record["after"]
        body = _table(["", "before (step 0)", f"after (step {last['step']})"], [
            [f"held-out implicit-reward accuracy ({record['held_out']['pairs']} pairs)",
             _pct(first["eval_accuracy"]), _pct(last["eval_accuracy"])],
            ["held-out margin (mean, nats x beta)", _pct(first["eval_margins"]), _pct(last["eval_margins"])],
            [f"greedy answers following the rule ({before['prompts']} held-out prompts)",
             _pct(before["follows_rule"]), _pct(after["follows_rule"])],
            ["... of which correct", _pct(before["correct"]), _pct(after["correct"])],
            ["... of which concise (<= answer + 4 words)", _pct(before["concise"]), _pct(after["concise"])]])
        body += ["", f"![DPO rewards per step]({record['plot']})"]
        title = "DPO: held-out implicit-reward accuracy and greedy answers that follow the hidden rule"
    (RESULTS / f"preferences_{name}.md").write_text("\n".join([f"**{title}.** {_caption(record)}", "", *body, ""]))


if __name__ == "__main__":
    main(sys.argv[1:])
