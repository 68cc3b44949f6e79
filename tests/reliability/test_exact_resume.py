"""Resume from each of 10 checkpoints of a CPU fp32 run (LoRA and full, gradient accumulation,
packing, a mixture of two datasets): the final weights and the loss log are bit-identical to the
uninterrupted run's."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import tunewright
from tunewright.training.checkpoint import complete_checkpoints
from tunewright.training.logging import read_metrics

STEPS = 11  # checkpoints at steps 1..10 are resumed from; 11 is the end


def _data(tmp_path):
    a = [{"instruction": f"Name the colour {i}.", "input": "", "output": "red green blue"[: 3 + i % 9]} for i in range(30)]
    b = [{"text": f"Paragraph {i}: " + "the quick brown fox " * (1 + i % 4)} for i in range(30)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in b))


def _cfg(tmp_path, model, method, name, **train):
    return {"model": {"name": model},
            "data": {"datasets": [{"path": str(tmp_path / "a.jsonl"), "format": "alpaca"},
                                  {"path": str(tmp_path / "b.jsonl"), "format": "text", "weight": 0.5}],
                     "template": "alpaca", "cutoff_len": 96, "packing": True},
            "method": method,
            "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": STEPS, "learning_rate": 5e-3,
                      "warmup_steps": 2, "lr_scheduler": "cosine", "seed": 7,
                      "mixed_precision": "fp32", **train},
            "output": {"dir": str(tmp_path / "runs"), "name": name, "save_steps": 1}}


def _weights(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _log(run_dir):
    return [{k: v for k, v in m.items() if k not in ("step_time", "tokens_per_s")} for m in read_metrics(run_dir)]


@pytest.mark.slow
@pytest.mark.parametrize("method", [{"name": "lora", "r": 4, "lora_dropout": 0.1, "target_modules": "all-linear"},
                                    {"name": "full"}], ids=["lora", "full"])
def test_resume_from_every_checkpoint_is_bit_exact(tmp_path, tiny_model_dir, method, tally):
    _data(tmp_path)
    model = tiny_model_dir("llama")
    whole = tunewright.train(_cfg(tmp_path, model, method, "whole"))
    expected_weights, expected_log = _weights(whole.final_dir), _log(whole.run_dir)
    steps = [s for s, _ in complete_checkpoints(whole.run_dir / "checkpoints")]
    assert steps == list(range(1, STEPS + 1))
    for k in range(1, STEPS):
        cut = tmp_path / "runs" / f"from{k}"
        shutil.copytree(whole.run_dir, cut)
        shutil.rmtree(cut / "final")
        resumed = tunewright.train(_cfg(tmp_path, model, method, f"from{k}",
                                        resume=str(cut / "checkpoints" / f"step-{k}")))
        got = _weights(resumed.final_dir)
        assert got.keys() == expected_weights.keys()
        assert all(torch.equal(got[n], expected_weights[n]) for n in got), f"weights differ after resuming at {k}"
        assert _log(resumed.run_dir) == expected_log, f"loss log differs after resuming at {k}"
        shutil.rmtree(cut)
        tally("exact resumes")
