"""A NaN/inf loss is reported with its step and batch (stop) or skipped up to a limit (skip); an
out-of-memory error names the knobs that lower memory."""

import json
import math

import pytest
import torch

import tunewright
from tunewright.errors import TunewrightError
from tunewright.objectives import causal_lm
from tunewright.training.logging import read_metrics


def _cfg(tmp_path, model, **train):
    rows = [{"instruction": f"Echo {i}.", "input": "", "output": f"{i}"} for i in range(16)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": {"name": model},
            "data": {"datasets": [{"path": str(data)}], "template": "alpaca", "cutoff_len": 48},
            "method": {"name": "lora", "r": 2},
            "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 4, "mixed_precision": "fp32", **train},
            "output": {"dir": str(tmp_path / "runs"), "name": "n"}}


@pytest.fixture
def poison_step_2(monkeypatch):
    """The loss of every micro-batch of optimizer step 2 is NaN."""
    real, calls = causal_lm.loss, {"n": 0}

    def loss(model, batch, cfg, state=None):
        calls["n"] += 1
        value, metrics = real(model, batch, cfg)
        return (value * float("nan"), metrics) if calls["n"] in (3, 4) else (value, metrics)

    monkeypatch.setattr(causal_lm, "loss", loss)


def test_nan_stops_with_step_and_batch(tmp_path, tiny_model_dir, poison_step_2):
    with pytest.raises(TunewrightError, match=r"step 2: loss is nan \(epoch 0, micro-batches 2\.\.3\).*nan_policy"):
        tunewright.train(_cfg(tmp_path, tiny_model_dir("llama")))


def test_nan_batch_is_skipped_without_touching_the_weights(tmp_path, tiny_model_dir, poison_step_2):
    result = tunewright.train(_cfg(tmp_path, tiny_model_dir("llama"), nan_policy="skip", max_nan_skips=1))
    losses = [m["loss"] for m in read_metrics(result.run_dir) if "loss" in m]
    assert result.steps == 4 and math.isnan(losses[1]) and all(math.isfinite(v) for v in losses[2:])


def test_too_many_skips_stop(tmp_path, tiny_model_dir, poison_step_2):
    with pytest.raises(TunewrightError, match="more than train.max_nan_skips=0"):
        tunewright.train(_cfg(tmp_path, tiny_model_dir("llama"), nan_policy="skip", max_nan_skips=0))


def test_out_of_memory_names_the_knobs(tmp_path, tiny_model_dir, monkeypatch):
    def oom(model, batch, cfg, state=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(causal_lm, "loss", oom)
    with pytest.raises(TunewrightError, match=r"step 1: out of memory .*micro_batch_size.*cutoff_len.*gradient_checkpointing"):
        tunewright.train(_cfg(tmp_path, tiny_model_dir("llama")))
