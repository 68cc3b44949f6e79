"""Generation and scoring metrics at each evaluation during training, with early stopping on them."""

import json

import pytest

import tunewright
from tunewright.errors import TunewrightError
from tunewright.training.logging import read_metrics


def _cfg(tmp_path, model, name, **eval_section):
    rows = [{"instruction": f"Is {i} even? Answer Yes or No.", "input": "", "output": "Yes" if i % 2 == 0 else "No"}
            for i in range(40)]
    data = tmp_path / "even.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": {"name": model},
            "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca",
                     "cutoff_len": 64, "val_set_size": 8},
            "method": {"name": "lora", "r": 4, "lora_dropout": 0.0},
            "train": {"batch_size": 4, "micro_batch_size": 4, "max_steps": 6, "learning_rate": 1e-2},
            "eval": {"steps": 2, **eval_section},
            "output": {"dir": str(tmp_path / "runs"), "name": name, "save_steps": 2}}


def _pairwise_auc(scores: list[float], positive: list[bool]) -> float:
    """ROC AUC by hand: the share of (positive, negative) pairs the scores order rightly (ties half)."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def test_scoring_metrics_drive_early_stopping_and_the_best_checkpoint(tmp_path, tiny_model_dir):
    """Eval AUC of this seeded run rises to its best at step 3 and then falls (checked below, so a
    change of the run shows as such): early stopping with patience 2 stops at step 5, the best
    checkpoint is step 3, retention keeps it, and its weights give the logged AUC by hand."""
    from tunewright.config import load_config
    from tunewright.data.mixture import build_splits
    from tunewright.eval.compare import rows_of
    from tunewright.eval.scoring import label_probabilities
    from tunewright.models.trained import load_trained

    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "auc", steps=1, labels=["No", "Yes"], best_metric="eval_auc",
               best_mode="max", early_stopping={"metric": "eval_auc", "mode": "max", "patience": 2})
    cfg["train"].update(max_steps=8, seed=0)
    cfg["output"].update(save_steps=1, save_total_limit=1)
    result = tunewright.train(cfg)
    auc = {m["step"]: m["eval_auc"] for m in read_metrics(result.run_dir) if "eval_auc" in m}
    # the premise: better at 3 than at 1 and 2 (2 ties 1: no improvement), worse at 4 and 5
    assert list(auc) == [1, 2, 3, 4, 5]
    assert auc[1] == auc[2] < auc[3] and auc[3] > auc[4] and auc[3] > auc[5]
    assert result.stopped_by == "early_stopping" and result.steps == 5 and result.best_step == 3
    kept = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir() if (p / "complete").is_file())
    assert kept == ["step-3", "step-5"]  # save_total_limit 1: the newest and the best

    # the AUC logged at step 3 is the AUC of P("Yes") of the kept step-3 weights on the eval rows
    model, tok = load_trained(result.run_dir / "checkpoints" / "step-3")
    parsed = load_config(raw=cfg)
    _, eval_examples, _ = build_splits(parsed.data, seed=parsed.train.seed)
    rows = rows_of(eval_examples)
    probs = label_probabilities(model, tok, [r.messages for r in rows], ["No", "Yes"], template=tok.chat_template)
    truth = [r.reference.strip() == "Yes" for r in rows]
    assert 0 < sum(truth) < len(truth)
    assert auc[3] == pytest.approx(_pairwise_auc(probs[:, 1].tolist(), truth))


def test_generation_metrics_are_logged_with_their_hand_computed_values(tmp_path, tiny_model_dir, monkeypatch):
    """The model generates for the first 4 eval rows; its answers are then replaced by known ones
    (the tiny model's text would score 0 everywhere, which a metric fed the wrong rows also gives):
    rows 1 and 3 answer exactly, rows 2 and 4 add two words. By hand, with one-word references
    (Yes/No): exact match 2/4; ROUGE-L F1 per row 1, 2PR/(P+R) with P = 1/3, R = 1 -> 0.5, 1, 0.5."""
    from tunewright.eval import compare

    generated = []
    real_answer = compare.answer

    def answer(loaded, rows, gen):
        generated.append(real_answer(loaded, rows, gen))  # generation really runs, one answer per row
        return [r.reference if i % 2 == 0 else f"{r.reference} it is" for i, r in enumerate(rows)]

    monkeypatch.setattr(compare, "answer", answer)
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "gen", metrics=["exact_match", "rougeL"], max_new_tokens=4,
               max_examples=4)
    result = tunewright.train({**cfg, "train": {**cfg["train"], "max_steps": 2}})
    evals = [m for m in read_metrics(result.run_dir) if "eval_loss" in m]
    assert [m["step"] for m in evals] == [2] and [len(g) for g in generated] == [4]
    assert evals[0]["eval_exact_match"] == pytest.approx(2 / 4)
    assert evals[0]["eval_rougeL"] == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)


def test_a_watched_metric_that_is_not_produced_stops_with_the_list(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "bad", metrics=["exact_match"], max_new_tokens=2,
               max_examples=2, best_metric="eval_rouge1")
    with pytest.raises(TunewrightError, match=r"eval_rouge1.*not produced.*eval_exact_match"):
        tunewright.train(cfg)
