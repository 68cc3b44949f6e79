"""`tunewright report recommender`: the LLM recommender across domains (the course's cross-domain
question: does taste learnt on books carry to films?).

The lab's users love the same genres in books and films. recipes/recommender.yaml (LoRA Yes/No,
early stopping on eval AUC, final/ = the best evaluation) is trained once on books and once on
films (`lab export --task recommendation domain=...`, the same users' splits); each model and the
base model (zero-shot) are scored on both domains' test rows by P(Yes) among {No, Yes}
(`tunewright eval` task score): in-domain on the diagonal, cross-domain off it.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunewright.applied.record import Recording, write_jsonl

__all__ = ["run_recommender_report", "DOMAINS"]

DOMAINS = ("books", "films")
RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "recommender.yaml"


def run_recommender_report(out: Path, smoke: bool = False, overrides: list[str] | None = None, recipe: Path = RECIPE,
                           sizes: tuple[int, int, int] = (300, 60, 200), command: str = "tunewright report recommender",
                           echo=print) -> dict:
    """Train on each domain, score every model on every domain; write results.json and report.md."""
    import tunewright
    from tunewright.applied.tabular_report import _evaluate
    from tunewright.config import load_config
    from tunewright.lab.tasks import make_task

    out = Path(out)
    base = load_config(recipe, overrides or [], smoke=smoke).model_dump(mode="json")
    n_train, n_val, n_test = (16, 8, 8) if smoke else sizes
    record = Recording(out, "LLM recommender across domains", command)
    data, runs = {}, {}
    for domain in DOMAINS:
        splits = make_task("recommendation", domain=domain, n_train=n_train, n_val=n_val, n_test=n_test)
        data[domain] = {s: write_jsonl(out / "data" / domain / f"{s}.jsonl", rows) for s, rows in splits.items()}
    for domain in DOMAINS:
        t0 = time.perf_counter()
        source = lambda split: {"path": str(data[domain][split]), "format": "classification",  # noqa: E731
                                "columns": {"text": "prompt"}}
        cfg = {**base, "data": {**base["data"], "datasets": [source("train")], "eval_datasets": [source("validation")]},
               "output": {**base["output"], "dir": str(out / "runs"), "name": f"trained-on-{domain}", "overwrite": True}}
        result = tunewright.train(cfg)
        runs[domain] = (result.run_dir, result.best_step, result.steps, round(time.perf_counter() - t0))
        echo(f"trained on {domain}: {result.steps} steps ({result.stopped_by}), final/ = step {result.best_step}")
    candidates = {"zero-shot": {"model": base["model"]["name"]},
                  **{f"LoRA, trained on {d}": {"run": str(runs[d][0])} for d in DOMAINS}}
    for name, candidate in candidates.items():
        row = {"model": name}
        for domain in DOMAINS:
            test = {"path": str(data[domain]["test"]), "format": "classification", "columns": {"text": "prompt"}}
            scores = _evaluate(out / "evals", f"{name.split(',')[-1].strip().replace(' ', '-')}-on-{domain}",
                               candidate, test, "score")
            row[f"{domain} AUC"], row[f"{domain} accuracy"] = round(scores["auc"], 3), round(scores["accuracy"], 3)
        record.add(**row)
        echo(f"{name}: {row}")
    notes = [f"model {base['model']['name']}; rows per domain: train {n_train}, validation {n_val}, test {n_test} "
             f"(lab recommendation, domain=books|films{', smoke' if smoke else ''})"]
    notes += [f"trained on {d}: {runs[d][2]} steps of {base['train']['batch_size']} (early stopping on eval_auc), "
              f"final/ = step {runs[d][1]}, {runs[d][3]} s" for d in DOMAINS]
    notes.append("AUC of P(Yes) among {No, Yes}; accuracy: the likelier label; in-domain where the row's domain "
                 "is the training domain, cross-domain otherwise")
    columns = ["model", *[f"{d} {m}" for d in DOMAINS for m in ("AUC", "accuracy")]]
    return record.write(columns, notes)
