"""The run folder `runs/<name>/`: one writer at a time, and nothing of the user's touched.

Owner. While `train` runs, `.lock` in the folder is held with an advisory lock (flock) and holds
the owner's pid, host and start time. A second `train` (or a `resume: auto` beside a live run)
refuses, naming that pid. The kernel drops a flock when its process dies, so a lock left by a
killed run (kill -9, a lost node) is free again; the next run takes it over and says whose it was.
The file stays (emptied) after a run that wrote anything: deleting it would let two runs lock
two different files of the same name; a run stopped before writing anything removes it and the
folder it made.

What a run writes there is listed in `OWNED`. `output.overwrite: true` removes only those entries
and refuses, listing them, when anything else is present (a note, a data file the config reads):
nothing a user put in a run folder is deleted by tunewright.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from tunewright.errors import ConfigError

__all__ = ["OWNED", "LOCK", "RunLock", "prepare_run_dir", "is_started"]

LOCK = ".lock"
# Every entry a training run (and its report) writes in its folder; `wandb/` when W&B logs there.
OWNED = ("config.yaml", "metrics.jsonl", "checkpoints", "final", ".tmp-final", "tensorboard", "wandb",
         "report.md", "results.json", "loss.png", "curves.png", LOCK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """`with RunLock(run_dir, say):` holds the folder for this process (see the module docstring)."""

    def __init__(self, run_dir: Path, say=print):
        self.path, self.say, self.fd = Path(run_dir) / LOCK, say, None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise ConfigError(f"output: {self.path.parent} is in use by another run ({self._holder()}); wait "
                              f"for it to finish, stop it, or choose another output.name") from None
        previous = self._read(fd)
        if previous:  # its process died without releasing: the kernel freed the flock, the note stayed
            where = "" if previous.get("host") == socket.gethostname() else f" on {previous.get('host')}"
            state = "no longer running" if not where and not _alive(int(previous.get("pid", 0))) else "lock released"
            self.say(f"output: taking over the lock of pid {previous.get('pid')}{where} ({state}; started "
                     f"{previous.get('started', '?')}): its run ended without releasing it")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is None:
            return False
        folder = self.path.parent
        try:
            if any(p.name != LOCK for p in folder.iterdir()):
                os.ftruncate(self.fd, 0)  # an empty lock file: released cleanly
            else:  # the run stopped before writing anything (a config or data error): leave no trace
                self.path.unlink()
                folder.rmdir()
        except OSError:
            pass  # a read-only or full disk: the flock still goes with the descriptor
        os.close(self.fd)
        self.fd = None
        return False

    def _read(self, fd: int) -> dict:
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "its lock is held, owner unknown"
        return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"


def is_started(run_dir: Path) -> bool:
    """A run has written here. config.yaml alone (a run stopped by a config or data error before
    training) and the lock do not count: nothing would be lost by starting over."""
    return run_dir.is_dir() and any(p.name not in ("config.yaml", LOCK) for p in run_dir.iterdir())


def prepare_run_dir(run_dir: Path, overwrite: bool, resuming: bool) -> Path:
    """Refuse to start afresh in a started run folder unless told to overwrite; overwriting removes
    only what tunewright wrote there. Call with the lock held."""
    if is_started(run_dir) and not resuming:
        if not overwrite:
            raise ConfigError(f"output: {run_dir} is not empty; resume it with train.resume=auto, choose another "
                              f"output.name, or set output.overwrite=true to replace it")
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in OWNED)
        if foreign:
            raise ConfigError(f"output.overwrite: {run_dir} holds files tunewright did not write "
                              f"({', '.join(foreign[:8])}{', ...' if len(foreign) > 8 else ''}); move them out or "
                              f"choose another output.name (overwrite removes only a run's own files)")
        for name in OWNED:
            entry = run_dir / name
            if name == LOCK or not (entry.exists() or entry.is_symlink()):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()  # a file, or a link (never followed: what it points to is not ours)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir
