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


def test_scoring_metrics_drive_early_stopping_and_the_best_checkpoint(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "auc", labels=["No", "Yes"], best_metric="eval_auc",
               best_mode="max", early_stopping={"metric": "eval_auc", "mode": "max", "patience": 1, "min_delta": 10.0})
    result = tunewright.train(cfg)
    evals = [m for m in read_metrics(result.run_dir) if "eval_auc" in m]
    # min_delta 10 can never be beaten: early stopping's reference is the first evaluation, so the
    # second stops the run; the best checkpoint follows the plain maximum and is on disk
    assert result.stopped_by == "early_stopping" and result.steps == 4
    assert [m["step"] for m in evals] == [2, 4]
    best = max(evals, key=lambda m: m["eval_auc"])
    assert result.best_step == best["step"]
    assert (result.run_dir / "checkpoints" / f"step-{best['step']}" / "complete").is_file()
    assert all(0.0 <= m["eval_accuracy"] <= 1.0 and 0.0 <= m["eval_auc"] <= 1.0 for m in evals)


def test_generation_metrics_are_logged(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "gen", metrics=["exact_match", "rougeL"], max_new_tokens=4,
               max_examples=4)
    result = tunewright.train({**cfg, "train": {**cfg["train"], "max_steps": 2}})
    evals = [m for m in read_metrics(result.run_dir) if "eval_loss" in m]
    assert evals and {"eval_exact_match", "eval_rougeL"} <= set(evals[-1])


def test_a_watched_metric_that_is_not_produced_stops_with_the_list(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "bad", metrics=["exact_match"], max_new_tokens=2,
               max_examples=2, best_metric="eval_rouge1")
    with pytest.raises(TunewrightError, match=r"eval_rouge1.*not produced.*eval_exact_match"):
        tunewright.train(cfg)
