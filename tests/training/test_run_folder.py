"""The run folder's lock and what `output.overwrite` may remove."""

import json
import os

import pytest

from tunewright.errors import ConfigError
from tunewright.training.run_folder import LOCK, RunLock, is_started, prepare_run_dir


def test_the_lock_records_its_owner_and_refuses_a_second_holder(tmp_path):
    run = tmp_path / "run"
    with RunLock(run) as held:
        (run / "metrics.jsonl").write_text("")
        info = json.loads((run / LOCK).read_text())
        assert info["pid"] == os.getpid() and info["host"] and info["started"]
        with pytest.raises(ConfigError, match=rf"in use by another run \(pid {os.getpid()} on "):
            with RunLock(run):  # a second open file description: flock refuses it like another process
                pass
        assert held.fd is not None
    assert (run / LOCK).read_text() == ""  # released: emptied, kept (the folder holds a run)


def test_a_run_that_wrote_nothing_leaves_no_folder(tmp_path):
    with RunLock(tmp_path / "run"):
        pass
    assert not (tmp_path / "run").exists()


def test_overwrite_removes_only_owned_entries(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-1").mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl", "report.md", "loss.png", LOCK):
        (run / name).write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    (run / "tensorboard").symlink_to(outside, target_is_directory=True)  # a link: removed, never followed
    assert is_started(run)
    with pytest.raises(ConfigError, match="is not empty"):
        prepare_run_dir(run, overwrite=False, resuming=False)
    prepare_run_dir(run, overwrite=True, resuming=False)
    assert sorted(p.name for p in run.iterdir()) == [LOCK] and (outside / "keep").read_text() == "mine"


def test_config_yaml_alone_is_not_a_started_run(tmp_path):
    (tmp_path / "config.yaml").write_text("x")
    (tmp_path / LOCK).write_text("")
    assert not is_started(tmp_path)
