"""recipes/recommender.yaml in its smoke mode on the lab's books: final/ holds the weights of the best
evaluation by eval_auc, and the eval_auc logged for them is scikit-learn's roc_auc_score of P(Yes)
computed by brute force (one full forward per prompt and label, no padding, no single-token shortcut).
Early stopping on eval_auc itself: tests/eval/test_during_training.py."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tunewright
from tunewright.applied.record import write_jsonl
from tunewright.config import load_config
from tunewright.training.logging import read_metrics

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "recommender.yaml"


def _brute_force_p_yes(model, tok, prompts: list[str]) -> list[float]:
    """P(Yes) among {No, Yes}: each label's summed token log-probability after the prompt, from a
    forward of prompt + label alone, then a softmax over the two."""
    from tunewright.eval.generate import prompt_ids

    labels = [tok("No", add_special_tokens=False)["input_ids"], tok("Yes", add_special_tokens=False)["input_ids"]]
    out = []
    with torch.no_grad():
        for prompt in prompts:
            context = prompt_ids(prompt, tok, tok.chat_template)
            scores = []
            for label in labels:
                ids = torch.tensor([context + label])
                logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
                scores.append(sum(logprobs[len(context) - 1 + i, t] for i, t in enumerate(label)))
            out.append(torch.softmax(torch.stack(scores), 0)[1].item())
    return out


def test_logged_auc_is_roc_auc_of_brute_force_p_yes_and_final_is_the_best(tmp_path):
    from sklearn.metrics import roc_auc_score

    from tunewright.lab.tasks import make_task
    from tunewright.models.trained import load_trained

    splits = make_task("recommendation", domain="books", n_train=16, n_val=12, n_test=0)
    paths = {s: write_jsonl(tmp_path / f"{s}.jsonl", rows) for s, rows in splits.items() if rows}
    cfg = load_config(RECIPE, [f"output.dir={tmp_path / 'runs'}", "train.seed=0"], smoke=True).model_dump(mode="json")
    cfg["train"]["learning_rate"] = 0.1  # high enough that the AUC peaks before the last step
    source = lambda split: {"path": str(paths[split]), "format": "classification",  # noqa: E731
                            "columns": {"text": "prompt"}}
    cfg["data"].update(datasets=[source("train")], eval_datasets=[source("validation")])
    result = tunewright.train(cfg)

    # step 0 (eval.at_start) measures the base weights: a reference, not a candidate for final/
    auc = {m["step"]: m["eval_auc"] for m in read_metrics(result.run_dir) if "eval_auc" in m and m["step"] > 0}
    best = max(auc, key=lambda s: (auc[s], -s))  # the first step reaching the highest AUC
    last = max(auc)
    assert result.best_step == best and result.steps == last
    # final/ is the best step's checkpoint, which is not the last step's (the premise of the check)
    saved = {step: load_file(result.run_dir / "checkpoints" / f"step-{step}" / "adapter_model.safetensors")
             for step in (best, last)}
    final = load_file(result.final_dir / "adapter_model.safetensors")
    assert best != last and any(not torch.equal(saved[last][k], v) for k, v in final.items())
    assert final.keys() == saved[best].keys() and all(torch.equal(saved[best][k], v) for k, v in final.items())

    model, tok = load_trained(result.final_dir)
    rows = splits["validation"]
    truth = [r["label"] == "Yes" for r in rows]
    assert 0 < sum(truth) < len(truth)
    p_yes = _brute_force_p_yes(model, tok, [r["prompt"] for r in rows])
    assert auc[best] == pytest.approx(roc_auc_score(truth, p_yes), abs=1e-6)
