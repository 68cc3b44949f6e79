"""`tunewright report tabular`: table rows as text against classical baselines (the course's "try
different formats" exercise), one table, one test split per dataset (applied/tabular_data.py).

Per dataset, accuracy and ROC AUC of P(Yes) on its test split for
    logistic regression, XGBoost          fitted on the training split (applied/baselines.py)
and for each serialization (`sentences`, `key_value`, data/tabular.py):
    zero-shot                             the base model's P(Yes) among {No, Yes} (eval task score)
    LoRA head                             recipes/tabular.yaml: a classification head (eval task classify)
    LoRA Yes/No                           the same recipe as causal_lm instruction tuning on the rows'
                                          Yes/No replies (eval task score on the tuned run)

Every LLM row is an ordinary run of the recipe with its data, objective and template replaced, and
an ordinary `tunewright eval` of it; `--smoke` runs the whole grid on the recipe's tiny smoke model
with a few rows of the lab's task.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunewright.applied.baselines import baseline_scores
from tunewright.applied.record import Recording, write_jsonl
from tunewright.applied.tabular_data import DATASETS, load_dataset

__all__ = ["run_tabular_report", "TEMPLATES", "METHODS"]

TEMPLATES = ("sentences", "key_value")
METHODS = ("zero-shot", "LoRA head", "LoRA Yes/No")
RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "tabular.yaml"


def _recipe(recipe: Path, smoke: bool, overrides: list[str]) -> dict:
    """The recipe as a plain dict, its smoke settings applied when asked."""
    from tunewright.config import load_config
    return load_config(recipe, overrides, smoke=smoke).model_dump(mode="json")


def _evaluate(out: Path, name: str, candidate: dict, data: dict, task: str) -> dict:
    from tunewright.eval.config import load_eval_config
    from tunewright.eval.tasks import evaluate

    raw = {"candidates": [{"name": name, **candidate}], "data": data, "task": task,
           "output": {"dir": str(out), "name": name, "samples": 0}}
    if task == "score":
        raw["labels"] = ["No", "Yes"]
    result = evaluate(load_eval_config(raw=raw), echo=lambda line: None)
    return result.results["candidates"][0]["scores"]


def _train(base: dict, out: Path, name: str, source: dict, objective: dict, template: str | None) -> Path:
    import tunewright

    cfg = {**base, "objective": objective, "eval": {}, "output": {"dir": str(out), "name": name, "overwrite": True},
           "data": {**base["data"], "datasets": [source], "eval_datasets": [], "template": template,
                    "val_set_size": 0}}
    return tunewright.train(cfg).run_dir


def _chat_template(model: str) -> str | None:
    """None when the model's tokenizer has a chat template (used as is), else chatml (tiny models)."""
    from tunewright.models.load import ModelConfig, load_tokenizer
    return None if load_tokenizer(ModelConfig(name=model)).chat_template else "chatml"


def run_tabular_report(out: Path, datasets: list[str] | None = None, templates=TEMPLATES, smoke: bool = False,
                       overrides: list[str] | None = None, recipe: Path = RECIPE, n_lab: int = 600,
                       max_test: int | None = None, llm_datasets: list[str] | None = None,
                       command: str = "tunewright report tabular", echo=print) -> dict:
    """Run the grid into `out` (data/, runs/, evals/, results.json, report.md); returns results.json.

    `max_test` keeps the first rows of each (shuffled) test split, for every method alike;
    `llm_datasets` (default: all) are the datasets that get the LLM rows, the others only the
    baselines: both shrink a recording to the CPU time there is, and the notes say so."""
    out = Path(out)
    base = _recipe(recipe, smoke, overrides or [])
    model = base["model"]["name"]
    datasets = datasets or (["lab"] if smoke else DATASETS.names())
    llm_datasets = datasets if llm_datasets is None else llm_datasets
    for name in [*datasets, *llm_datasets]:
        DATASETS.get(name)  # an unknown name fails here, with did-you-mean, before any work
    record = Recording(out, "Table rows as text against classical baselines", command)
    sizes = {}
    for name in datasets:
        t0 = time.perf_counter()
        data = load_dataset(name, n_lab=24 if smoke else n_lab)
        if smoke:
            data.train, data.test = data.train[:24], data.test[:12]
        if max_test is not None:
            data.test = data.test[:max_test]
        train = write_jsonl(out / "data" / name / "train.jsonl", data.train)
        test = write_jsonl(out / "data" / name / "test.jsonl", data.test)
        sizes[name] = (len(data.train), len(data.test))
        for method in ("logistic", "xgboost"):
            scores = baseline_scores(method, data.train, data.test)
            record.add(dataset=name, method={"logistic": "logistic regression", "xgboost": "XGBoost"}[method],
                       template="", **_rounded(scores))
            echo(f"{name}: {method} {_rounded(scores)}")
        for template in templates if name in llm_datasets else ():
            tab = {"target": "target", "serialization": template, "question": data.question}
            test_data = {"path": str(test), "format": "tabular", "tabular": tab}
            source = {"path": str(train), "format": "tabular", "tabular": tab}
            rows = {"zero-shot": _evaluate(out / "evals", f"{name}-{template}-zero-shot", {"model": model},
                                           test_data, "score")}
            head = _train(base, out / "runs", f"{name}-{template}-head", source, base["objective"], None)
            rows["LoRA head"] = _evaluate(out / "evals", f"{name}-{template}-head", {"run": str(head)}, test_data,
                                          "classify")
            yes_no = _train(base, out / "runs", f"{name}-{template}-yes-no", source, {"name": "auto"},
                            _chat_template(model))
            rows["LoRA Yes/No"] = _evaluate(out / "evals", f"{name}-{template}-yes-no", {"run": str(yes_no)},
                                            test_data, "score")
            for method in METHODS:
                record.add(dataset=name, method=method, template=template, **_rounded(rows[method]))
                echo(f"{name}: {method} ({template}) {_rounded(rows[method])}")
        echo(f"{name}: {time.perf_counter() - t0:.0f} s")
    steps = base["train"]["max_steps"]
    notes = [f"model {model}; each LoRA run: {steps} steps of {base['train']['batch_size']} rows "
             f"(recipes/tabular.yaml{', smoke' if smoke else ''}); test rows: "
             + ", ".join(f"{n} {test} (train {train})" for n, (train, test) in sizes.items())
             + (f" (test splits cut to their first {max_test} rows)" if max_test is not None else ""),
             *([f"LLM rows for {', '.join(llm_datasets)} only (the others: baselines only, for CPU time)"]
               if set(llm_datasets) != set(datasets) else []),
             "AUC: of P(Yes); accuracy: the likelier of No/Yes (baselines: P(Yes) >= 0.5)",
             "templates: sentences ('The rooms is 3.') and key_value ('rooms: 3'), then the question"]
    return record.write(["dataset", "method", "template", "accuracy", "auc"], notes)


def _rounded(scores: dict) -> dict:
    return {"accuracy": round(scores["accuracy"], 3), "auc": round(scores["auc"], 3)}
