"""Recorded figure of recipes/ppo.yaml on the lab's preference task, shrunk to fit ~20 minutes on a busy CPU:

    python -m benchmarks.ppo [ppo train overrides...]

1. a reward model: recipes/reward_model.yaml for REWARD_STEPS (-> runs/reward_model, the recipe's scorer);
2. the policy before PPO (the default model) answers held-out prompts greedily (HELD_OUT of the test split);
3. PPO: recipes/ppo.yaml for PPO_STEPS (24 rollouts of 8 prompts, 32 new tokens, 2 passes each);
4. the trained policy answers the same prompts.

Each policy's greedy answers are measured by `evaluate`: mean reward under the reward model, the summed
log-ratio to the reference per answer (the policy's log-prob of its own greedy answer minus the reference's,
the adapter switched off: one deterministic path, not a KL estimate, and it can be negative; the KL held to
the target is the training rollouts' sampled estimate), empty answers, and the rate at which the answers
follow the task's hidden rule (correct and concise, `lab.tasks_applied.follows_rule`, which reads no model). A reward that rises while that rate does not
is named reward hacking in the report. Writes results/ppo.json (commands, wall times, load averages,
versions, the figures), results/ppo.md (the table quoted in the README) and results/ppo_reward_kl.png
(reward, KL and the KL coefficient per step from the run's metrics).
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.recorded import RESULTS, ROOT, _load, _run, _table, _versions
from benchmarks.recorded import _caption as recorded_caption

DATA = "recipes/data/preferences"
REWARD_MODEL = "runs/reward_model"
# the reward model's held-out pairs are not evaluated here (its own figure is benchmarks.preferences reward)
REWARD_STEPS = ["train.max_steps=16", "data.eval_datasets=[]", "eval.steps=null", "eval.at_start=false"]
# the recipe's rollouts (8 prompts, 32 new tokens, 2 passes in 2 minibatches: 4 optimizer steps each),
# 24 of them: 96 optimizer steps
PPO_STEPS = ["train.max_steps=96"]
HELD_OUT = 64  # the last rows of the test split: prompts never trained on
MAX_NEW_TOKENS = 32  # greedy answers, as the DPO figure's (benchmarks/preferences.py)


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in (ROOT / path).read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(policy: str, reward_model: str, rows: list[dict], max_new_tokens: int = MAX_NEW_TOKENS,
             batch_size: int = 8, template: str | None = None, functions: list[dict] | None = None) -> dict:
    """Greedy answers of `policy` (a run or a model) to `rows`' prompts, measured: mean reward (under
    `reward_model` plus the weighted reward `functions`, as the recipe sums them; `reward_model` the
    reward model's part alone), the mean summed log-ratio to the reference per answer (`kl`: sum over the greedy
    answer's tokens of log π - log π_ref at temperature 1; the reference is the adapter switched off, or
    the model itself when it has none: 0; one path per prompt, so no KL estimate), empty
    answers (an end token first), the hidden rule's rate (correct, concise, both)."""
    import torch

    from tunewright.data.templates import resolve_template
    from tunewright.data.tokenize import encode_prompt
    from tunewright.data.types import Message
    from tunewright.lab.tasks_applied import follows_rule
    from tunewright.models.aliases import resolve_model_name
    from tunewright.models.trained import load_trained
    from tunewright.objectives import pairs, ppo, rewards, rollout

    t0 = time.perf_counter()
    model, tok = load_trained(resolve_model_name(policy))
    template = resolve_template(template, tok)  # None: the tokenizer's own, as the recipe trains
    ends = pairs.end_ids(tok, template)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    # the reference a PPO run's KL is taken to: the adapter off; a model without one is its own reference
    reference = pairs.make_reference(model, "adapter_disabled") if hasattr(model, "disable_adapter") else None
    cfg = ppo.Config(rewards=[{"model": reward_model}, *(functions or [])], temperature=1.0)
    sources = rewards.load_sources(cfg, "cpu")
    out = {"reward": [], "reward_model": [], "kl": [], "empty": [], "correct": [], "concise": [], "replies": []}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        prompt_ids = [encode_prompt([Message("user", r["prompt"])], tok, template) for r in chunk]
        width = max(len(p) for p in prompt_ids)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 eos_token_id=ends, pad_token_id=pad)
            answers = gen[:, width:]
            amask = rollout.answer_mask(answers, ends)
            batch = {"input_ids": torch.where(torch.cat([mask.bool(), amask.bool()], 1), gen, pad),
                     "attention_mask": torch.cat([mask, amask.long()], 1), "answer_mask": amask}
            logp = rollout.token_stats(model, batch, cfg)[0]
            ref = reference(lambda m: rollout.token_stats(m, batch, cfg)[0]) if reference else logp
        lengths = amask.sum(-1)
        has_end = torch.isin(answers, torch.tensor(ends)).any(-1)
        texts = [tok.decode(a[:int(n) - int(e)].tolist(), skip_special_tokens=True).strip()
                 for a, n, e in zip(answers, lengths, has_end)]
        whole = [tok.decode(p + a[:int(n)].tolist()) for p, a, n in zip(prompt_ids, answers, lengths)]
        prompts = [r["prompt"] for r in chunk]
        by_model = rewards.score(sources[:1], prompts, texts, whole)  # the reward model read once, not twice
        out["reward"] += (by_model + rewards.score(sources[1:], prompts, texts, whole)).tolist()
        out["reward_model"] += by_model.tolist()
        out["kl"] += ((logp - ref) * amask).sum(-1).tolist()
        out["empty"] += (lengths - has_end.long() == 0).tolist()
        for text, r in zip(texts, chunk):
            correct, concise = follows_rule(text, r["chosen"])
            out["correct"].append(correct)
            out["concise"].append(concise)
        out["replies"] += texts
    n = len(rows)
    return {"policy": policy, "prompts": n, "reward": sum(out["reward"]) / n,
            "reward_model": sum(out["reward_model"]) / n, "kl": sum(out["kl"]) / n,
            "empty": sum(out["empty"]), "follows_rule": sum(c and k for c, k in zip(out["correct"], out["concise"])) / n,
            "correct": sum(out["correct"]) / n, "concise": sum(out["concise"]) / n,
            "words": sum(len(t.split()) for t in out["replies"]) / n, "seconds": round(time.perf_counter() - t0, 1),
            "samples": [{"prompt": r["prompt"][-80:], "answer": r["chosen"], "reply": t, "reward": round(s, 3)}
                        for r, t, s in zip(rows[:8], out["replies"][:8], out["reward"][:8])]}


def verdict(before: dict, after: dict, kl_target: float, rollout_kl: list[float]) -> list[str]:
    """The report's sentences: did the reward rise, did the rule's rate rise (reward hacking when the
    reward rises and the rate does not), the KL against twice its target, empty answers. The KL held to
    the target is the training rollouts' (`rollout_kl`, one per rollout: the mean over its sampled answers
    of the summed k1, the Monte Carlo estimate PPO steers by); the greedy answers' summed log-ratio
    (`after["kl"]`) follows one deterministic path per prompt and is no KL estimate: it can be negative."""
    rose = after["reward"] > before["reward"]
    rule = after["follows_rule"] - before["follows_rule"]
    # the counts beside the rates: on a few dozen prompts a rise of one answer is not a finding
    n0, n1 = (round(f["follows_rule"] * f["prompts"]) for f in (before, after))
    lines = [f"Mean reward {'rose' if rose else 'did not rise'} ({before['reward']:+.3f} -> {after['reward']:+.3f}); "
             f"the rule's rate {'rose' if rule > 0 else 'fell' if rule < 0 else 'stayed flat'} "
             f"({before['follows_rule']:.3f} -> {after['follows_rule']:.3f}: {n0} -> {n1} of {after['prompts']} "
             f"answers)."]
    if rose and rule <= 0:
        lines.append("This is reward hacking: the reward rose while the rate at which answers follow the task's "
                     "hidden rule did not.")
    bound, worst = 2 * kl_target, max(rollout_kl)
    lines.append(f"KL per answer of the training rollouts: {rollout_kl[-1]:.3f} nats at the last, {worst:.3f} at "
                 f"most: {'within' if worst <= bound else 'above'} twice the target ({bound:g}).")
    lines.append(f"Empty answers: {before['empty']} before, {after['empty']} after (of {after['prompts']}).")
    return lines


def _rollout_kl(record: dict) -> list[float]:
    """One KL per rollout: the mean of its optimizer steps' logged KL. Each step logs the mean over its
    minibatch's answers (equal-sized minibatches, every answer once per pass), so the mean over a
    rollout's ppo_epochs x minibatches steps is the mean over its answers."""
    run = record["ppo_config"]
    per = run["ppo_epochs"] * run["minibatches"]
    kls = [m["kl"] for m in record["train_curve"]]
    return [sum(kls[i:i + per]) / len(kls[i:i + per]) for i in range(0, len(kls), per)]


def main(argv: list[str]) -> None:
    if argv[:1] == ["--markdown"]:
        return write_markdown()
    import yaml

    from tunewright.eval.plots import plot_curves
    from tunewright.training.logging import read_metrics

    record = {"name": "ppo", "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
              "extra_train_overrides": argv, "versions": _versions(), "load_start": _load(), "steps": []}
    rows = _rows(f"{DATA}/test.jsonl")[-HELD_OUT:]
    recipe = yaml.safe_load((ROOT / "recipes/ppo.yaml").read_text())
    functions = [src for src in recipe["objective"]["rewards"] if "function" in src]  # beside the reward model
    t0 = time.perf_counter()
    with open(RESULTS / "ppo.log", "w") as log:
        record["steps"].append(_run(["train", "recipes/reward_model.yaml", "output.overwrite=true", *REWARD_STEPS],
                                    log))
        record["before"] = evaluate("smollm2-135m-instruct", str(ROOT / REWARD_MODEL), rows, functions=functions)
        record["steps"].append(_run(["train", "recipes/ppo.yaml", "output.overwrite=true", *PPO_STEPS, *argv], log))
        record["after"] = evaluate(str(ROOT / "runs/ppo"), str(ROOT / REWARD_MODEL), rows, functions=functions)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["load_end"] = _load()
    saved = yaml.safe_load((ROOT / "runs/ppo/config.yaml").read_text())
    record["kl_target"] = saved["objective"]["adaptive_kl"]["target"]
    record["ppo_config"] = {"batch_size": saved["train"]["batch_size"], "learning_rate": saved["train"]["learning_rate"],
                            **{k: saved["objective"][k] for k in ("max_new_tokens", "ppo_epochs", "minibatches")}}
    metrics = [m for m in read_metrics(ROOT / "runs/ppo") if "reward" in m]
    keys = ["reward", "kl", "kl_coef", "answer_length"]
    record["train_curve"] = [{k: m[k] for k in ("step", *keys, "policy_loss", "value_loss")} for m in metrics]
    record["plot"] = "ppo_reward_kl.png"
    plot_curves(metrics, keys, RESULTS / record["plot"],
                title="PPO on the lab's preference prompts: rollout reward and KL per step")
    (RESULTS / "ppo.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    write_markdown()
    print(f"wrote {RESULTS}/ppo.json and .md in {record['seconds']} s")


def _pct(v) -> str:
    return f"{v:.3f}"


def write_markdown() -> None:
    record = json.loads((RESULTS / "ppo.json").read_text())
    before, after = record["before"], record["after"]
    record["verdict"] = verdict(before, after, record["kl_target"], _rollout_kl(record))
    (RESULTS / "ppo.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    body = _table(["", "before (the default model)", f"after PPO ({record['train_curve'][-1]['step']} steps)"], [
        [f"mean reward of greedy answers ({before['prompts']} held-out prompts)", f"{before['reward']:+.3f}",
         f"{after['reward']:+.3f}"],
        *([["... of which the reward model's", f"{before['reward_model']:+.3f}", f"{after['reward_model']:+.3f}"]]
          if "reward_model" in before else []),
        ["greedy answer's summed log pi/pi_ref (nats; one path, no KL estimate)", f"{before['kl']:.3f}",
         f"{after['kl']:.3f}"],
        ["empty answers", before["empty"], after["empty"]],
        ["answers following the hidden rule", _pct(before["follows_rule"]), _pct(after["follows_rule"])],
        ["... correct", _pct(before["correct"]), _pct(after["correct"])],
        ["... concise (<= answer + 4 words)", _pct(before["concise"]), _pct(after["concise"])],
        ["mean words per answer", f"{before['words']:.1f}", f"{after['words']:.1f}"]])
    run = record["ppo_config"]
    caption = (f"{recorded_caption(record)} Shrunk to fit ~20 minutes on 2 cores: the reward model "
               f"trained 16 steps; PPO {len(_rollout_kl(record))} rollouts of {run['batch_size']} prompts "
               f"({run['max_new_tokens']} new tokens, {run['ppo_epochs']} passes in {run['minibatches']} minibatches, "
               f"lr {run['learning_rate']:g}), KL target {record['kl_target']:g} nats per answer.")
    text = ["**PPO: held-out greedy answers before and after, under the recipe's reward and the hidden rule.** "
            + caption, "", *body, "", *record["verdict"], "", f"![PPO reward and KL per step]({record['plot']})", ""]
    (RESULTS / "ppo.md").write_text("\n".join(text))


if __name__ == "__main__":
    main(sys.argv[1:])
