"""`eval.load_best`: final/ holds the best evaluation's weights, exactly, and says so; without it
final/ is the last step; a resume whose best was never saved is refused; it needs eval.steps."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

import tunewright
from tunewright.config import load_config
from tunewright.errors import ConfigError
from tunewright.training.logging import read_metrics


@pytest.fixture
def make(tmp_path, tiny_model_dir):
    """A seeded 6-step LoRA run evaluated at steps 2, 4 and 6. Its lr (3, decaying linearly) is high
    enough that eval_loss improves to step 4 and then worsens (checked in each test: a change of
    the run shows as a broken premise, not as a wrong weight comparison)."""
    rows = [{"instruction": f"Is {i} even? Answer Yes or No.", "input": "", "output": "Yes" if i % 2 == 0 else "No"}
            for i in range(40)]
    data = tmp_path / "even.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def cfg(name: str, **eval_section) -> dict:
        return {"model": {"name": tiny_model_dir("llama")},
                "data": {"datasets": [{"path": str(data)}], "template": "alpaca", "cutoff_len": 64, "val_set_size": 8},
                "method": {"name": "lora", "r": 4, "lora_dropout": 0.0},
                "train": {"batch_size": 4, "micro_batch_size": 4, "max_steps": 6, "learning_rate": 3.0, "seed": 0},
                "eval": {"steps": 2, **eval_section},
                "output": {"dir": str(tmp_path / "runs"), "name": name}}
    return cfg


def _premise(run_dir) -> dict[int, float]:
    loss = {m["step"]: m["eval_loss"] for m in read_metrics(run_dir) if "eval_loss" in m}
    assert list(loss) == [2, 4, 6] and loss[2] > loss[4] < loss[6]  # best at 4, worse at the end
    return loss


def _weights(folder) -> dict:
    return load_file(folder / "adapter_model.safetensors")


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_final_holds_the_best_checkpoints_weights_and_says_so(make, capsys):
    cfg = make("best", load_best=True)
    cfg["output"]["save_total_limit"] = 1  # retention keeps the best besides the newest
    result = tunewright.train(cfg)
    loss = _premise(result.run_dir)
    ckpts = result.run_dir / "checkpoints"
    # no save_steps: the bests (2, then 4) were saved for load_best, and the end (6) as always
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-4", "step-6"]
    final = _weights(result.final_dir)
    assert _equal(final, _weights(ckpts / "step-4")) and not _equal(final, _weights(ckpts / "step-6"))

    record = json.loads((result.final_dir / "tunewright.json").read_text())
    assert record["step"] == 4 and record["best"] == {"metric": "eval_loss", "mode": "min", "value": loss[4]}
    said = f"final/ holds step 4 (best eval_loss {loss[4]:.4g})"
    assert said in (result.run_dir / "report.md").read_text()
    assert json.loads((result.run_dir / "results.json").read_text())["final"] == {"step": 4, "best": record["best"]}
    assert f"which holds step 4 (best eval_loss {loss[4]:.4g})" in capsys.readouterr().out


def test_without_load_best_final_is_the_last_step_and_a_resume_cannot_turn_it_on(make, capsys):
    cfg = make("last")
    result = tunewright.train(cfg)
    _premise(result.run_dir)
    ckpts = result.run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-6"]  # the best (4) was not kept
    assert _equal(_weights(result.final_dir), _weights(ckpts / "step-6"))
    record = json.loads((result.final_dir / "tunewright.json").read_text())
    assert record["step"] == 6 and record["best"] is None
    assert "final/ holds step 6, the last step" in (result.run_dir / "report.md").read_text()

    # the best so far (step 4) is not on disk: load_best is refused at the resume, not after training
    more = {**cfg, "train": {**cfg["train"], "max_steps": 8, "resume": "auto"},
            "eval": {**cfg["eval"], "load_best": True}}
    with pytest.raises(ConfigError, match=r"eval.load_best: the best step so far, 4, was not saved"):
        tunewright.train(more)


def test_load_best_needs_eval_steps():
    base = {"data": {"datasets": [{"path": "train.jsonl"}]}}
    with pytest.raises(ConfigError, match=r"^<config>: eval.load_best needs eval.steps"):
        load_config(raw={**base, "eval": {"load_best": True}})
    assert load_config(raw={**base, "eval": {"load_best": True, "steps": 5}}).eval.load_best
