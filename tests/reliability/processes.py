"""Children for the signal, lock and exit-code cases: a fork of the test process runs tunewright
(torch and transformers are imported once, so a child starts in milliseconds, not ~7 s), writes
what it prints to a log file, and is always waited for with a bound."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest


def fork(fn, log: Path, env: dict | None = None, stdin_fd: int | None = None) -> int:
    """Run `fn()` in a child; its return value is the child's exit code. Returns the pid."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            # pytest's capture replaced sys.stdout/stderr with its own objects: write to the log instead
            sys.stdout = sys.stderr = open(fd, "w", buffering=1, encoding="utf-8")
            if stdin_fd is not None:
                os.dup2(stdin_fd, 0)
                sys.stdin = open(0, encoding="utf-8")  # not pytest's stand-in, which refuses reads
            os.environ.update(env or {})
            import torch
            from tqdm import tqdm
            torch.set_num_threads(1)
            tqdm.set_lock(threading.RLock())  # a lock the parent held at the fork would never be released here
            code = fn()
        except BaseException:  # noqa: BLE001 - the child must never return into pytest
            traceback.print_exc()
            code = 98
        finally:
            try:
                sys.stdout.flush()
            finally:
                os._exit(code)
    return pid


def wait(pid: int, timeout: float) -> int:
    """The child's exit code (-N when killed by signal N); a child still running after `timeout`
    seconds is killed and the test fails, so nothing here can hang the suite."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"child {pid} still running after {timeout} s")


def wait_for(condition, timeout: float, what: str, pid: int | None = None) -> None:
    """Poll `condition()` until true; fail (killing `pid`) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if pid is not None and os.waitpid(pid, os.WNOHANG)[0]:
            pytest.fail(f"the child exited before {what}")
        if time.monotonic() > deadline:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def logged_steps(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def tiny_run(tmp_path: Path, model: str, name: str = "run", rows: int = 40, **sections) -> dict:
    """A small LoRA run config on `rows` alpaca rows; `sections` update its sections."""
    data = tmp_path / f"{name}-rows.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Repeat {i}.", "input": "", "output": f"{i} " * (1 + i % 3)})
                            + "\n" for i in range(rows)))
    cfg = {"model": {"name": model},
           "data": {"datasets": [{"path": str(data)}], "template": "alpaca", "cutoff_len": 48},
           "method": {"name": "lora", "r": 4},
           "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 6, "learning_rate": 1e-2,
                     "mixed_precision": "fp32"},
           "output": {"dir": str(tmp_path / "runs"), "name": name, "save_steps": 2}}
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg
