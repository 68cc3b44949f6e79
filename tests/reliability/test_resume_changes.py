"""A resume honours a change or refuses it, naming the key (issue 11, row 8).

Honoured: a new learning rate (from the resumed step on) and more steps (the schedule recomputed
for the new total), each said on the console; config.yaml records the values in use. Refused: a
rewritten data file, another batch size, another template, fewer steps than the checkpoint holds;
config.yaml then still records the run as it was. A checkpoint at the last step (final/ not written)
resumes to write final/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

import tunewright
from tunewright.errors import ConfigError
from tunewright.training.logging import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from processes import tiny_run  # noqa: E402


@pytest.fixture
def four_steps(tmp_path, tiny_model_dir):
    """A finished 4-step run (linear schedule, lr 1e-2, checkpoints at 2 and 4) and its config."""
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "r", train={"max_steps": 4}, output={"save_steps": 2})
    return cfg, tunewright.train(cfg)


def _resume(cfg: dict, **train) -> dict:
    return {**cfg, "train": {**cfg["train"], **train}}


def test_a_new_learning_rate_applies_from_the_resumed_step(four_steps, capsys, tally):
    cfg, done = four_steps
    step2 = str(done.run_dir / "checkpoints" / "step-2")
    before = {m["step"]: m for m in read_metrics(done.run_dir)}
    capsys.readouterr()
    tunewright.train(_resume(cfg, learning_rate=0.5, resume=step2))
    assert "train.learning_rate: 0.5 from step 2 on (the checkpoint's run used 0.01)" in capsys.readouterr().out
    after = {m["step"]: m for m in read_metrics(done.run_dir)}
    assert after[2] == before[2]
    # linear decay over 4 steps: the lr used at step k+1 is peak x (1 - k/4)
    assert after[3]["lr"] == pytest.approx(0.5 * (1 - 2 / 4)) and after[4]["lr"] == pytest.approx(0.5 * (1 - 3 / 4))
    assert after[3]["loss"] == before[3]["loss"] and after[4]["loss"] != before[4]["loss"]  # step 3's update differs
    assert yaml.safe_load((done.run_dir / "config.yaml").read_text())["train"]["learning_rate"] == 0.5
    tally("resume changes honoured or refused")


def test_more_steps_follow_the_recomputed_schedule_not_lr_zero(four_steps, capsys, tally):
    cfg, done = four_steps
    capsys.readouterr()
    result = tunewright.train(_resume(cfg, max_steps=8, resume="auto"))
    out = capsys.readouterr().out
    assert result.steps == 8
    assert "train.max_steps: 8 steps in all (the checkpoint's run planned 4)" in out
    lines = {m["step"]: m for m in read_metrics(done.run_dir)}
    assert [lines[s]["lr"] for s in range(5, 9)] == pytest.approx([1e-2 * (1 - k / 8) for k in range(4, 8)])
    assert yaml.safe_load((done.run_dir / "config.yaml").read_text())["train"]["max_steps"] == 8
    tally("resume changes honoured or refused")


def test_fewer_steps_than_the_checkpoint_is_refused(four_steps, tally):
    cfg, _ = four_steps
    with pytest.raises(ConfigError, match=r"train.max_steps: the run would end at step 3, but .*step-4 is at step 4"):
        tunewright.train(_resume(cfg, max_steps=3, resume="auto"))
    tally("resume changes honoured or refused")


def test_a_run_whose_final_save_failed_writes_final_on_resume(four_steps, capsys, tally):
    """A full disk at final/ leaves the step-4 checkpoint (the last step) and says "resume with
    train.resume=auto to write final/": that resume trains nothing and writes final/ from it."""
    import shutil

    from safetensors.torch import load_file

    cfg, done = four_steps
    saved = load_file(done.run_dir / "final" / "adapter_model.safetensors")
    shutil.rmtree(done.run_dir / "final")
    lines = len(read_metrics(done.run_dir))
    capsys.readouterr()
    again = tunewright.train(_resume(cfg, resume="auto"))
    assert again.steps == 4 and again.stopped_by == "max_steps"
    assert "done: 4 steps (max_steps); saved " in capsys.readouterr().out  # no "loss nan": nothing trained
    assert len(read_metrics(done.run_dir)) == lines  # no step trained again
    written = load_file(again.final_dir / "adapter_model.safetensors")
    assert written.keys() == saved.keys() and all(torch.equal(written[k], saved[k]) for k in saved)
    tally("resume changes honoured or refused")


def _refused(cfg: dict, run_dir: Path, pattern: str, **changes) -> None:
    config_before = (run_dir / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=pattern) as err:
        tunewright.train(changes.pop("whole", None) or _resume(cfg, resume="auto", **changes))
    assert "\n" not in str(err.value)
    assert (run_dir / "config.yaml").read_text() == config_before  # never records a value not used


def test_a_rewritten_data_file_is_refused(four_steps, tally):
    cfg, done = four_steps
    data = Path(cfg["data"]["datasets"][0]["path"])
    rows = data.read_text().splitlines()
    data.write_text("\n".join(rows[:8]) + "\n")  # 40 rows -> 8: same path, same settings
    _refused(cfg, done.run_dir, r"different settings: data \(the training rows' content changed",
             max_steps=6)
    tally("resume changes honoured or refused")


def test_another_batch_size_or_template_is_refused(four_steps, tally):
    cfg, done = four_steps
    _refused(cfg, done.run_dir, r"different settings: train.batch_size \(4 -> 8\)", batch_size=8, max_steps=6)
    chatml = {**_resume(cfg, resume="auto", max_steps=6), "data": {**cfg["data"], "template": "chatml"}}
    _refused(cfg, done.run_dir, r"different settings: .*data.template \('alpaca' -> 'chatml'\)", whole=chatml)
    weight_decay = _resume(cfg, resume="auto", max_steps=6, weight_decay=0.1)
    _refused(cfg, done.run_dir, r"different settings: train.weight_decay \(0.0 -> 0.1\)", whole=weight_decay)
    tally("resume changes honoured or refused", 3)


def test_an_unchanged_resume_is_still_bit_exact(four_steps):
    """Applying the honoured settings must not disturb an unchanged resume (the lr is recomputed
    to the very float the scheduler held)."""
    from safetensors.torch import load_file

    cfg, done = four_steps
    first = load_file(done.final_dir / "adapter_model.safetensors")
    lines = read_metrics(done.run_dir)
    again = tunewright.train(_resume(cfg, resume=str(done.run_dir / "checkpoints" / "step-2")))
    second = load_file(again.final_dir / "adapter_model.safetensors")
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)
    assert [(m["lr"], m["loss"]) for m in read_metrics(done.run_dir)] == [(m["lr"], m["loss"]) for m in lines]


def test_a_checkpoint_written_with_mixed_precision_no_resumes_under_fp32(four_steps, tally):
    """Before `fp32` existed, full precision was written "no" into every checkpoint's resume key:
    the same setting, so such a checkpoint resumes (bit-exact) under fp32; bf16 is still a change."""
    import json

    from safetensors.torch import load_file

    from tunewright.training.checkpoint import COMPLETE, manifest, verify

    cfg, done = four_steps
    step2 = done.run_dir / "checkpoints" / "step-2"
    state = json.loads((step2 / "trainer_state.json").read_text())
    assert state["resume_key"]["train"]["mixed_precision"] == "fp32"
    state["resume_key"]["train"]["mixed_precision"] = "no"  # as an older version wrote it
    (step2 / "trainer_state.json").write_text(json.dumps(state, indent=1))
    (step2 / COMPLETE).write_text(json.dumps({"step": 2, "files": manifest(step2)}))  # a sound checkpoint again
    assert verify(step2) is None

    _refused(cfg, done.run_dir, r"different settings: train.mixed_precision \('fp32' -> 'bf16'\)",
             whole=_resume(cfg, resume=str(step2), mixed_precision="bf16"))
    first = load_file(done.final_dir / "adapter_model.safetensors")
    again = tunewright.train(_resume(cfg, resume=str(step2), mixed_precision="no"))
    second = load_file(again.final_dir / "adapter_model.safetensors")
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)
    assert yaml.safe_load((done.run_dir / "config.yaml").read_text())["train"]["mixed_precision"] == "fp32"
    tally("resume changes honoured or refused")
