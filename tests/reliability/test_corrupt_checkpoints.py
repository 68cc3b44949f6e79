"""Checkpoints are verified before use (issue 11, row 9).

The `complete` marker lists each file's size and sha256. A checkpoint whose files were truncated,
zeroed or removed after the save is skipped by `resume: auto` (with a message, the previous one is
used), refused with one line when named, and refused by generate and merge, as is a half-written
`.tmp-step-N` folder or a checkpoint without its marker.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

import tunewright
from tunewright.errors import ConfigError
from tunewright.models.trained import load_trained
from tunewright.models.merge import merge_to_folder
from tunewright.training.checkpoint import COMPLETE

sys.path.insert(0, str(Path(__file__).parent))
from processes import tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("corrupt")
    cfg = tiny_run(tmp, tiny_model_dir("llama"), "run", train={"max_steps": 4}, output={"save_steps": 2})
    return cfg, tunewright.train(cfg).run_dir


def _copy(finished, tmp_path) -> tuple[dict, Path]:
    cfg, run_dir = finished
    copy = tmp_path / "runs" / "run"
    shutil.copytree(run_dir, copy)
    return {**cfg, "output": {**cfg["output"], "dir": str(tmp_path / "runs")}}, copy


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:1000])


def _zero(file: Path) -> None:
    file.write_bytes(b"\0" * file.stat().st_size)


def _drop_state(folder: Path) -> None:
    (folder / "trainer_state.json").unlink()


@pytest.mark.parametrize("damage,file,reason", [
    (_truncate, "adapter_model.safetensors", r"adapter_model.safetensors has 1,000 bytes, the save wrote"),
    (_zero, "adapter_model.safetensors", r"adapter_model.safetensors does not match its checksum"),
    (_truncate, "optimizer.pt", r"optimizer.pt has 1,000 bytes"),
    (lambda f: f.write_text('{"step": 4, "best'), "trainer_state.json", r"trainer_state.json has \d+ bytes"),
    (lambda f: f.unlink(), "trainer_state.json", r"trainer_state.json is missing"),
], ids=["truncated-weights", "zeroed-weights", "truncated-optimizer", "truncated-state", "missing-state"])
def test_resume_auto_skips_a_damaged_checkpoint(finished, tmp_path, capsys, damage, file, reason, tally):
    cfg, run_dir = _copy(finished, tmp_path)
    damage(run_dir / "checkpoints" / "step-4" / file)
    capsys.readouterr()
    result = tunewright.train({**cfg, "train": {**cfg["train"], "max_steps": 6, "resume": "auto"}})
    out = capsys.readouterr().out
    assert f"skipping {run_dir / 'checkpoints' / 'step-4'}: " in out and "trying the previous checkpoint" in out
    assert re.search(reason, out), out
    assert f"resumed from {run_dir / 'checkpoints' / 'step-2'} at step 2" in out and result.steps == 6
    tally("damaged checkpoints caught")


def test_a_damaged_checkpoint_named_explicitly_is_one_line(finished, tmp_path, tally):
    cfg, run_dir = _copy(finished, tmp_path)
    step4 = run_dir / "checkpoints" / "step-4"
    _truncate(step4 / "adapter_model.safetensors")
    with pytest.raises(ConfigError, match=r"train.resume: .*step-4: adapter_model.safetensors has 1,000 bytes") as err:
        tunewright.train({**cfg, "train": {**cfg["train"], "max_steps": 6, "resume": str(step4)}})
    assert "\n" not in str(err.value)
    tally("damaged checkpoints caught")


def test_generate_and_merge_refuse_unfinished_or_damaged_checkpoints(finished, tmp_path, tally):
    _, run_dir = _copy(finished, tmp_path)
    ckpts = run_dir / "checkpoints"
    half = ckpts / ".tmp-step-6"
    shutil.copytree(ckpts / "step-4", half)
    (half / COMPLETE).unlink()
    unmarked = ckpts / "step-8"
    shutil.copytree(ckpts / "step-4", unmarked)
    (unmarked / COMPLETE).unlink()
    _zero(ckpts / "step-2" / "adapter_model.safetensors")
    for folder, why in ((half, "a save that did not finish"), (unmarked, "no 'complete' marker"),
                        (ckpts / "step-2", "does not match its checksum")):
        with pytest.raises(ConfigError, match=why):
            load_trained(folder)
        with pytest.raises(ConfigError, match=why):
            merge_to_folder(folder, tmp_path / f"merged-{folder.name}")
        assert not (tmp_path / f"merged-{folder.name}").exists()
    load_trained(ckpts / "step-4")  # the sound one still loads
    tally("damaged checkpoints caught", 3)


def test_a_marker_from_before_manifests_is_still_accepted(finished, tmp_path):
    cfg, run_dir = _copy(finished, tmp_path)
    step4 = run_dir / "checkpoints" / "step-4"
    assert json.loads((step4 / COMPLETE).read_text())["files"]  # today's marker lists the files
    (step4 / COMPLETE).write_text("4")  # as the first release wrote it
    result = tunewright.train({**cfg, "train": {**cfg["train"], "max_steps": 5, "resume": "auto"}})
    assert result.steps == 5
