"""A run folder has one owner and only its own files are touched (issue 11, rows 3, 4 and 5).

Two trains on one name, a resume beside a live run, a resume pointed at another run's checkpoint,
and `output.overwrite` over a folder holding the user's files or reached through a symlink.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path

import pytest

import tunewright
from tunewright.errors import ConfigError
from tunewright.training.run_folder import LOCK, RunLock

sys.path.insert(0, str(Path(__file__).parent))
from processes import fork, tiny_run, wait, wait_for  # noqa: E402


def _snapshot(folder: Path) -> dict:
    """Every file under `folder` with its sha256: equal snapshots = nothing touched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK}


def test_a_second_train_on_a_live_run_refuses_naming_its_pid(tmp_path, tiny_model_dir, tally):
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "shared", train={"max_steps": 400},
                   output={"save_steps": 50})
    run_dir = tmp_path / "runs" / "shared"
    pid = fork(lambda: 0 if tunewright.train(cfg) else 1, tmp_path / "log")
    try:
        wait_for(lambda: (run_dir / "metrics.jsonl").exists(), 60, "the first run's first step", pid)
        for attempt in (cfg, {**cfg, "train": {**cfg["train"], "resume": "auto"}}):
            with pytest.raises(ConfigError, match=rf"output: .*shared is in use by another run \(pid {pid} on "):
                tunewright.train(attempt)
    finally:
        os.kill(pid, signal.SIGKILL)
        wait(pid, 30)
    # the holder died without releasing: the kernel dropped its flock, so a resume takes over, saying so
    result = tunewright.train({**cfg, "train": {**cfg["train"], "max_steps": 3, "resume": "auto"}})
    assert result.steps == 3
    tally("run folder owners", 3)


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path):
    ready = tmp_path / "held"

    def hold() -> int:
        with RunLock(tmp_path / "run", print):
            (tmp_path / "run" / "work").write_text("x")
            ready.touch()
            os.kill(os.getpid(), signal.SIGKILL)  # dies holding it: no release
        return 0

    pid = fork(hold, tmp_path / "log")
    assert wait(pid, 30) == -signal.SIGKILL
    assert ready.exists()
    said = []
    with RunLock(tmp_path / "run", said.append):
        pass
    assert len(said) == 1 and f"taking over the lock of pid {pid} (no longer running" in said[0]


def test_resume_from_another_runs_checkpoint_is_refused_and_touches_nothing(tmp_path, tiny_model_dir, tally):
    model = tiny_model_dir("llama")
    a = tunewright.train(tiny_run(tmp_path, model, "A", train={"max_steps": 6}))
    b = tunewright.train(tiny_run(tmp_path, model, "B", train={"max_steps": 2}))
    before = _snapshot(a.run_dir), _snapshot(b.run_dir)
    with pytest.raises(ConfigError, match=r"train.resume: .*B/checkpoints/step-2 is not a checkpoint of this run "
                                          r".*method.init_from="):
        tunewright.train(tiny_run(tmp_path, model, "A",
                                  train={"max_steps": 6, "resume": str(b.run_dir / "checkpoints" / "step-2")}))
    assert (_snapshot(a.run_dir), _snapshot(b.run_dir)) == before
    tally("run folder owners")


def test_overwrite_keeps_the_users_files_and_the_data_it_reads(tmp_path, tiny_model_dir, tally):
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "x", train={"max_steps": 2})
    run_dir = tmp_path / "runs" / "x"
    tunewright.train(cfg)
    data = run_dir / "mydata.jsonl"
    data.write_bytes(Path(cfg["data"]["datasets"][0]["path"]).read_bytes())
    before = _snapshot(run_dir)
    again = {**cfg, "data": {**cfg["data"], "datasets": [{"path": str(data)}]},
             "output": {**cfg["output"], "overwrite": True}}
    with pytest.raises(ConfigError, match=r"output.overwrite: .* holds files tunewright did not write \(mydata.jsonl\)"):
        tunewright.train(again)
    assert _snapshot(run_dir) == before
    tally("run folder owners")


def test_overwrite_through_a_symlinked_run_folder(tmp_path, tiny_model_dir, tally):
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "linked", train={"max_steps": 2})
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "linked").symlink_to(real, target_is_directory=True)
    tunewright.train(cfg)
    result = tunewright.train({**cfg, "train": {**cfg["train"], "max_steps": 1}, "output": {**cfg["output"], "overwrite": True}})
    assert result.steps == 1 and (tmp_path / "runs" / "linked").is_symlink()
    assert sorted(p.name for p in (real / "checkpoints").iterdir()) == ["step-1"]
    tally("run folder owners")
