"""kill -9 at 20 seeded random moments of training, some inside a save, each followed by
`train.resume: auto`: the run always continues from the last complete checkpoint and ends with the
weights of an uninterrupted run. SIGTERM and SIGINT save at the next step boundary and exit cleanly.

The kills are driven from this one process: each attempt is a fork of it (torch and transformers
are imported once; `fork_child` in tests/conftest.py), killed after it reported reaching its target
step. No wait is unbounded: a child that stops making progress fails the test with its stack.
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
STOPPED_BY_SIGNAL = 3  # a child's exit code when `train` returned stopped_by == "signal"


def _cfg(tmp_path, model, name, **train):
    rows = [{"instruction": f"Repeat {i}.", "input": "", "output": f"{i} " * (1 + i % 3)} for i in range(40)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": {"name": model},
            "data": {"datasets": [{"path": str(data)}], "template": "alpaca", "cutoff_len": 48},
            "method": {"name": "lora", "r": 4, "lora_dropout": 0.1},
            "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": STEPS, "learning_rate": 1e-2,
                      "logging_steps": 1, "mixed_precision": "fp32", **train},
            "output": {"dir": str(tmp_path / "runs"), "name": name, "save_steps": 1}}


def _weights(folder):
    return load_file(folder / "adapter_model.safetensors")


def _trainer(cfg, env=None):
    """The child's work: train `cfg`, reporting `step N` once the loop has logged step N (the step is
    done); exit 0 when the run finished, STOPPED_BY_SIGNAL when a signal stopped it."""
    def main(report) -> int:
        from tunewright.training.logging import MetricsLog

        os.environ.update(env or {})
        logged = MetricsLog.log

        def log(self, step, metrics, *args, **kwargs):
            logged(self, step, metrics, *args, **kwargs)
            if "loss" in metrics:  # a training step, not an evaluation
                report(f"step {step}")

        MetricsLog.log = log  # in this child only: it is a fork
        result = tunewright.train(cfg)
        return STOPPED_BY_SIGNAL if result.stopped_by == "signal" else 0
    return main


def _step(line: str) -> int:
    return int(line.split()[1])


def _saves_under_way(ckpts, since_ns: int) -> list:
    """`.tmp-step-N` folders written since `since_ns`: a save in progress, not one an earlier kill left."""
    found = []
    for p in ckpts.glob(".tmp-step-*"):
        try:
            if p.stat().st_mtime_ns >= since_ns:
                found.append(p)
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return found


def _latest_step(ckpts) -> int:
    done = latest_checkpoint(ckpts)
    return int(done.name.split("-")[1]) if done else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, fork_child_module):
    """The uninterrupted run, in a fork like the others (one thread: the same arithmetic order)."""
    tmp = tmp_path_factory.mktemp("ref")
    assert fork_child_module(_trainer(_cfg(tmp, tiny_model_dir("llama"), "ref"))).exit_code(timeout=300) == 0
    return _weights(tmp / "runs" / "ref" / "final")


@pytest.mark.slow
def test_twenty_kills_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_model_dir, reference, fork_child,
                                                                 tally):
    rng = random.Random(1234)
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "killed", resume="auto")
    ckpts = tmp_path / "runs" / "killed" / "checkpoints"
    kills = in_save = 0
    # 20 seeded moments spread over the run: the step after which to strike, then a random delay
    # (0-40 ms: mid-step), or, every fourth time, the moment a save is half written
    targets = sorted(rng.sample(range(2, STEPS - 2), 20))
    for attempt, target in enumerate(targets):
        pause = attempt % 4 == 3  # this child sleeps inside each save, so the kill lands there
        resumed_at, started = _latest_step(ckpts), time.time_ns()
        child = fork_child(_trainer(cfg, {"TUNEWRIGHT_TEST_PAUSE_IN_SAVE": "0.2"} if pause else {}))
        if child.wait_for_report(lambda line: _step(line) >= target, timeout=120) is None:
            child.exit_code(timeout=30)  # fails with the child's traceback if it raised
            pytest.fail(f"attempt {attempt}: the run ended before step {target}: {child.lines[-3:]}")
        # it continued from the newest complete checkpoint, not from an older one nor from scratch
        assert _step(child.lines[0]) == resumed_at + 1, (attempt, resumed_at, child.lines[:2])
        # then the moment: a save half written (pause), or 0-40 ms into the step after the target's
        # checkpoint (the loop logs a step before saving it)
        deadline = time.monotonic() + 30
        while not (_saves_under_way(ckpts, started) if pause else _latest_step(ckpts) >= target):
            if time.monotonic() > deadline:
                child.fail(f"wrote no {'save' if pause else f'checkpoint of step {target}'} in 30 s")
            time.sleep(0.002)
        time.sleep(0.05 if pause else rng.uniform(0.0, 0.04))
        landed_in_save = bool(_saves_under_way(ckpts, started))
        child.kill(signal.SIGKILL)
        status = child.wait(timeout=30)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            kills += 1  # a kill counts only here: the child had reported its target step and died of it
            in_save += landed_in_save
        else:  # it ended before the signal: only a finished run may do that
            assert child.exit_code(timeout=1) == 0
        latest = latest_checkpoint(ckpts)
        if latest is not None:  # whatever was killed, the newest complete checkpoint is whole
            assert (latest / COMPLETE).is_file()
            load_file(latest / "adapter_model.safetensors")
            torch.load(latest / "optimizer.pt", weights_only=True)
    assert fork_child(_trainer(cfg)).exit_code(timeout=300) == 0
    got = _weights(tmp_path / "runs" / "killed" / "final")
    assert all(torch.equal(got[k], reference[k]) for k in reference)
    assert kills >= 18 and in_save >= 4
    tally("kill -9 survived", kills)
    tally("kills inside a save", in_save)


PPO_STEPS = 12


def _ppo_cfg(tmp_path, model, name, **train):
    """A PPO run (objectives/ppo.py) whose rollouts feed 4 optimizer steps (2 epochs x 2 minibatches), so
    most kills land inside a rollout: the resumed run must take the saved buffer, value head and beta."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = _cfg(tmp_path, model, name, max_steps=PPO_STEPS, **train)
    reward = tmp_path / "ppo_reward.py"
    reward.write_text("def vowels(prompts, answers):\n    return [sum(c in 'aeiou' for c in a) / max(1, len(a)) "
                      "for a in answers]\n")
    cfg["objective"] = {"name": "ppo", "rewards": [{"function": f"{reward}:vowels"}], "max_new_tokens": 6,
                        "ppo_epochs": 2, "minibatches": 2, "adaptive_kl": {"target": 0.01, "horizon": 50}}
    cfg["method"]["lora_dropout"] = 0.0
    return cfg


def _ppo_state(run_dir):
    """The adapter and the last checkpoint's objective state (value head, rollout buffer, beta)."""
    last = max((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return {**load_file(run_dir / "final" / "adapter_model.safetensors"),
            **{f"objective.{k}": v for k, v in load_file(last / "objective" / "rollout.safetensors").items()}}


@pytest.mark.slow
def test_kills_inside_ppo_rollouts_then_resume_match_an_uninterrupted_run(tmp_path, tiny_model_dir, fork_child, tally):
    """kill -9 at 4 seeded moments of a PPO run: adapter, value head, rollout buffer and adaptive beta at
    the end equal those of the same run never killed."""
    model = tiny_model_dir("llama")
    assert fork_child(_trainer(_ppo_cfg(tmp_path / "ref", model, "ref"))).exit_code(timeout=300) == 0
    want = _ppo_state(tmp_path / "ref" / "runs" / "ref")
    rng = random.Random(99)
    cfg = _ppo_cfg(tmp_path, model, "killed", resume="auto")
    ckpts = tmp_path / "runs" / "killed" / "checkpoints"
    kills = 0
    for target in sorted(rng.sample(range(1, PPO_STEPS - 1), 4)):
        child = fork_child(_trainer(cfg))
        if child.wait_for_report(lambda line: _step(line) >= target, timeout=120) is None:
            child.exit_code(timeout=30)
            pytest.fail(f"the PPO run ended before step {target}: {child.lines[-3:]}")
        time.sleep(rng.uniform(0.0, 0.04))
        child.kill(signal.SIGKILL)
        status = child.wait(timeout=30)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            kills += 1
        else:
            assert child.exit_code(timeout=1) == 0
    assert fork_child(_trainer(cfg)).exit_code(timeout=300) == 0
    got = _ppo_state(tmp_path / "runs" / "killed")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert kills >= 3
    tally("PPO kill -9 survived", kills)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_at_the_step_boundary_and_exits_cleanly(tmp_path, tiny_model_dir, reference, sig, fork_child,
                                                             tally):
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "signalled", resume="auto")
    child = fork_child(_trainer(cfg))
    assert child.wait_for_report(lambda line: _step(line) >= 3, timeout=120) is not None  # training is under way
    child.kill(sig)
    assert child.exit_code(timeout=60) == STOPPED_BY_SIGNAL  # stopped by the signal, not run to the end
    stopped_at = _step(child.lines[-1])
    latest = latest_checkpoint(tmp_path / "runs" / "signalled" / "checkpoints")
    # the step under way when the signal came was finished and saved, and nothing after it ran
    assert latest is not None and (latest / COMPLETE).is_file() and latest.name == f"step-{stopped_at}"
    assert 3 <= stopped_at < STEPS
    assert fork_child(_trainer(cfg)).exit_code(timeout=300) == 0
    got = _weights(tmp_path / "runs" / "signalled" / "final")
    assert all(torch.equal(got[k], reference[k]) for k in reference)
    tally("clean signal stops")


# ---------------------------------------------------------------- the harness cannot hang the suite

def _deadlock(report) -> int:
    """What a child stuck on a lock copied from its parent looks like: it never returns."""
    import threading

    lock = threading.Lock()
    lock.acquire()
    report("holding the lock")
    lock.acquire()  # never granted
    return 0


def test_a_hung_child_fails_the_test_with_its_stack(fork_child):
    child = fork_child(_deadlock)
    assert child.wait_for_report(lambda line: "holding" in line, timeout=30)
    with pytest.raises(pytest.fail.Exception) as failure:
        child.wait(timeout=1)
    message = str(failure.value)
    assert "did not end in 1 s" in message and "in _deadlock" in message  # where it hangs, from faulthandler
    assert os.WIFSIGNALED(child.status)  # and it is gone


HUNG_TEST = '''
import os, time

def test_waits_for_a_child_that_never_ends():
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    try:
        os.waitpid(pid, 0)  # the kill test's old unbounded wait
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
'''


def test_the_suite_timeout_turns_a_hang_into_a_failure_with_a_stack(tmp_path, pytestconfig):
    """pytest-timeout is on for the whole suite (pyproject: `timeout`); run here at 2 s on a test
    whose unbounded waitpid never returns, it fails that test with the stack of the hang."""
    import subprocess
    import sys

    assert float(pytestconfig.getini("timeout")) >= 300  # the suite's setting: 3x its slowest test
    (tmp_path / "test_hung.py").write_text(HUNG_TEST)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "timeout=2",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_hung.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "Timeout" in proc.stdout and "1 failed" in proc.stdout
    assert "os.waitpid(pid, 0)" in proc.stdout  # the stack points at the wait that hung
