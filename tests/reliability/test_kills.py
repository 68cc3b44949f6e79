"""kill -9 at 20 seeded random moments of training, some inside a save, each followed by
`train.resume: auto`: the run always continues from the last complete checkpoint and ends with the
weights of an uninterrupted run. SIGTERM and SIGINT save at the next step boundary and exit cleanly.

The kills are driven from this one process: each attempt is a fork of it (torch and transformers
are imported once), killed after a random delay.
"""

import json
import os
import random
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

import tunewright
from tunewright.training.checkpoint import COMPLETE, latest_checkpoint

STEPS = 80


def _cfg(tmp_path, model, name, **train):
    rows = [{"instruction": f"Repeat {i}.", "input": "", "output": f"{i} " * (1 + i % 3)} for i in range(40)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": {"name": model},
            "data": {"datasets": [{"path": str(data)}], "template": "alpaca", "cutoff_len": 48},
            "method": {"name": "lora", "r": 4, "lora_dropout": 0.1},
            "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": STEPS, "learning_rate": 1e-2, **train},
            "output": {"dir": str(tmp_path / "runs"), "name": name, "save_steps": 1}}


def _weights(folder):
    return load_file(folder / "adapter_model.safetensors")


def _fork(cfg, env=None) -> int:
    pid = os.fork()
    if pid == 0:  # the child: train, then leave without running pytest's teardown
        code = 1
        try:
            os.environ.update(env or {})
            torch.set_num_threads(1)
            result = tunewright.train(cfg)
            code = 0 if result.stopped_by != "signal" else 3
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    return pid


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """The uninterrupted run, in a fork like the others (one thread: the same arithmetic order)."""
    tmp = tmp_path_factory.mktemp("ref")
    _, status = os.waitpid(_fork(_cfg(tmp, tiny_model_dir("llama"), "ref")), 0)
    assert os.WEXITSTATUS(status) == 0
    return _weights(tmp / "runs" / "ref" / "final")


@pytest.mark.slow
def test_twenty_kills_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_model_dir, reference, tally):
    rng = random.Random(1234)
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "killed", resume="auto")
    ckpts = tmp_path / "runs" / "killed" / "checkpoints"
    kills = in_save = 0
    # 20 seeded moments spread over the run: the step after which to strike, then a random delay
    # (0-40 ms: mid-step), or, every fourth time, the moment a save is half written
    targets = sorted(rng.sample(range(2, STEPS - 2), 20))
    for attempt, target in enumerate(targets):
        pause = attempt % 4 == 3  # this child sleeps inside each save, so the kill lands there
        pid = _fork(cfg, {"TUNEWRIGHT_TEST_PAUSE_IN_SAVE": "0.2"} if pause else {})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
            done = latest_checkpoint(ckpts)
            step = int(done.name.split("-")[1]) if done else 0
            if step >= target and (not pause or list(ckpts.glob(".tmp-step-*"))):
                time.sleep(0.05 if pause else rng.uniform(0.0, 0.04))
                break
            time.sleep(0.002)
        landed_in_save = bool(list(ckpts.glob(".tmp-step-*")))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            kills += 1
            in_save += landed_in_save
        latest = latest_checkpoint(ckpts)
        if latest is not None:  # whatever was killed, the newest complete checkpoint is whole
            assert (latest / COMPLETE).is_file()
            load_file(latest / "adapter_model.safetensors")
            torch.load(latest / "optimizer.pt", weights_only=True)
    pid = _fork(cfg)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    got = _weights(tmp_path / "runs" / "killed" / "final")
    assert all(torch.equal(got[k], reference[k]) for k in reference)
    assert kills >= 18 and in_save >= 4
    tally("kill -9 survived", kills)
    tally("kills inside a save", in_save)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_at_the_step_boundary_and_exits_cleanly(tmp_path, tiny_model_dir, reference, sig, tally):
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "signalled", resume="auto")
    pid = _fork(cfg)
    time.sleep(1.5)
    os.kill(pid, sig)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 3)  # 3: stopped by the signal, saved
    latest = latest_checkpoint(tmp_path / "runs" / "signalled" / "checkpoints")
    assert latest is not None and (latest / COMPLETE).is_file()
    pid = _fork(cfg)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    got = _weights(tmp_path / "runs" / "signalled" / "final")
    assert all(torch.equal(got[k], reference[k]) for k in reference)
    tally("clean signal stops")
