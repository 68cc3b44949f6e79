"""Golden traces: the loss and gradient norm of the first 5 steps of three tiny fp32 CPU runs
(causal LM packed, causal LM padded, seq2seq), pinned before the plug-in refactor of issue 13.

A change that moves any of these numbers changes what users' runs compute; it must be deliberate,
explained in its commit, and the file regenerated with `TUNEWRIGHT_WRITE_GOLDEN=1 pytest
tests/test_golden_traces.py`. The comparison is exact on the torch version that wrote the file
(the same kernels, the same order of additions) and within 1e-5 relative on another one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import tunewright
from tunewright.training.logging import read_metrics

GOLDEN = Path(__file__).parent / "golden" / "traces.json"
STEPS = 5


def _rows(n: int) -> list[dict]:
    return [{"instruction": f"Count to {i % 7 + 1} in words.", "input": "" if i % 2 else f"Start at {i % 3}.",
             "output": " ".join(["one", "two", "three", "four", "five", "six", "seven"][:i % 7 + 1])} for i in range(n)]


def _run(tmp_path, model: str, name: str, **data) -> list[dict]:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(32)))
    cfg = {"model": {"name": model, "dtype": "float32"},
           "data": {"datasets": [{"path": str(path)}], "cutoff_len": 64, **data},
           "method": {"name": "lora", "r": 4, "lora_dropout": 0.0, "target_modules": "all-linear"},
           "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": STEPS, "learning_rate": 1e-2, "seed": 7,
                     "mixed_precision": "no"},  # fp32: the traces were recorded in it
           "output": {"dir": str(tmp_path / "runs"), "name": name}}
    tunewright.train(cfg)
    return [{"loss": m["loss"], "grad_norm": m["grad_norm"]} for m in read_metrics(tmp_path / "runs" / name)
            if "loss" in m]


CASES = {
    "causal_lm_packed": ("llama", {"template": "alpaca", "packing": True}),
    "causal_lm_padded": ("llama", {"template": "alpaca"}),
    "seq2seq": ("t5", {}),
}


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


@pytest.mark.parametrize("case", list(CASES))
def test_first_steps_match_the_golden_trace(case, golden, tmp_path, tiny_model_dir):
    arch, data = CASES[case]
    trace = _run(tmp_path, tiny_model_dir(arch), case, **data)
    assert len(trace) == STEPS
    if os.environ.get("TUNEWRIGHT_WRITE_GOLDEN"):
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        golden["torch"] = torch.__version__
        golden[case] = trace
        GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
        return
    assert case in golden, f"no golden trace for {case}; write it with TUNEWRIGHT_WRITE_GOLDEN=1"
    if golden["torch"] == torch.__version__:
        assert trace == golden[case]
    else:
        for got, want in zip(trace, golden[case]):
            assert got == pytest.approx(want, rel=1e-5)
