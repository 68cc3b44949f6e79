"""A task sequence stopped in its second task (after the step-2 checkpoint, final/ not written,
R's second row not scored) and run again ends bit-exact: the same weights, the same EWC state and
the same R and probe rows P as the sequence that was never stopped."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tunewright.continual.config import load_continual_config
from tunewright.continual.sequence import run_sequence

sys.path.insert(0, str(Path(__file__).parents[1] / "continual"))
from sequences import probes_config, sequence_config  # noqa: E402


def test_a_sequence_stopped_mid_task_resumes_bit_exact(tiny_model_dir, tmp_path):
    raw = sequence_config(tmp_path, model={"name": tiny_model_dir("llama")}, strategies={"ewc": {"weight": 50.0, "samples": 8}},
                       output={"dir": str(tmp_path / "runs"), "name": "seq", "save_steps": 2},
                       **probes_config(tmp_path))
    cfg = load_continual_config(raw=raw)
    whole = run_sequence(cfg, "ewc", say=lambda *a: None)
    second = tmp_path / "runs" / "seq" / "ewc" / "1-topics"
    weights = load_file(second / "final" / "model.safetensors")
    state = load_file(second / "final" / "regularizers" / "ewc.safetensors")

    # what a kill after step 2 of the second task leaves: its step-2 checkpoint, no final/, one row of R and P
    shutil.rmtree(second / "final")
    shutil.rmtree(second / "checkpoints" / "step-4")
    record_file = second.parent / "sequence.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "R": record["R"][:1], "P": record["P"][:1],
                                       "seconds": record["seconds"][:1]}))

    again = run_sequence(cfg, "ewc", say=lambda *a: None)

    assert again["R"] == whole["R"] and again["zero_shot"] == whole["zero_shot"]
    assert len(whole["P"]) == 2 and again["P"] == whole["P"] and again["zero_shot_P"] == whole["zero_shot_P"]
    resumed = load_file(second / "final" / "model.safetensors")
    assert resumed.keys() == weights.keys() and all(torch.equal(resumed[k], weights[k]) for k in weights)
    resumed_state = load_file(second / "final" / "regularizers" / "ewc.safetensors")
    assert resumed_state.keys() == state.keys() and all(torch.equal(resumed_state[k], state[k]) for k in state)
    log = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log if "loss" in m] == [1, 2, 3, 4]  # the cut steps not logged twice
    # the first task's Fisher holds the second from step 2 on (at step 1 the weights are still θ*)
    assert [m["reg_ewc"] > 0 for m in log if "loss" in m] == [False, True, True, True]
