"""Checkpoints: atomic, resumable bit for bit, never unpickled.

A checkpoint folder `checkpoints/step-N/` holds what the method trains (a PEFT adapter or a plain
transformers folder), `optimizer.pt`, `scheduler.pt` and `rng.pt` (tensors only, read back with
`torch.load(weights_only=True)`), `trainer_state.json` (step, data position, best metric, history)
and the tokenizer with its chat template. It is written into `.tmp-step-N`, fsynced, renamed into
place, and only then marked with a `complete` file, so a crash at any moment leaves either the
previous checkpoints or a folder without the marker, which resume ignores.
"""

from __future__ import annotations

import errno as _errno
import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from tunewright.errors import ConfigError, TunewrightError

__all__ = ["fsync_tree", "save_checkpoint", "CheckpointWriteError", "load_training_state", "complete_checkpoints", "latest_checkpoint",
           "prune_checkpoints", "COMPLETE"]

COMPLETE = "complete"
_STEP = re.compile(r"^step-(\d+)$")


class CheckpointWriteError(TunewrightError):
    """A save failed on the disk (full, read-only, ...). The previous checkpoints are untouched, and
    the half-written `.tmp-step-N` folder is never taken for a checkpoint (it has no marker)."""


def _disk_error(err: OSError, step: int, doing: dict) -> CheckpointWriteError:
    """One line: which file, which operation, which errno, and that older checkpoints are safe."""
    code = _errno.errorcode.get(err.errno, str(err.errno)) if err.errno is not None else "?"
    file = err.filename or doing.get("file", "?")
    return CheckpointWriteError(f"{file}: saving checkpoint step-{step}: {doing.get('op', 'write')} failed: {code} "
                                f"({err.strerror or err}); earlier checkpoints are intact (free space or fix "
                                f"permissions, then resume)")


def fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, torch.Tensor]:
    """Every RNG the run draws from, as tensors (so weights_only loading reads it back)."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "python": torch.tensor([version, *py_state, -1 if gauss is None else 0], dtype=torch.int64),
            "python_gauss": torch.tensor([0.0 if gauss is None else gauss], dtype=torch.float64),
            "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
            "numpy_rest": torch.tensor([np_pos, np_has_gauss, np_gauss], dtype=torch.float64),
            **({"cuda": torch.stack(torch.cuda.get_rng_state_all())} if torch.cuda.is_available() else {})}


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"].tolist()
    gauss = None if py[-1] == -1 else float(state["python_gauss"][0])
    random.setstate((py[0], tuple(py[1:-1]), gauss))
    pos, has_gauss, np_gauss = state["numpy_rest"].tolist()
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), np_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def _pause_for_tests() -> None:
    """$TUNEWRIGHT_TEST_PAUSE_IN_SAVE seconds of sleep in the middle of a save, so the reliability
    suite's kill -9 can land inside one (unset in normal use: no cost)."""
    pause = os.environ.get("TUNEWRIGHT_TEST_PAUSE_IN_SAVE")
    if pause:
        import time
        time.sleep(float(pause))


def save_checkpoint(ckpt_root: Path, step: int, *, save_weights, optimizer, scheduler, trainer_state: dict,
                    tokenizer=None, is_main: bool = True) -> Path:
    """Write `ckpt_root/step-{step}` atomically. `save_weights(path)` writes the method's weights.

    A disk error (ENOSPC, EROFS, EIO, ...) anywhere in the save raises CheckpointWriteError naming
    the file and errno; the partial `.tmp-step-N` is removed where the disk still allows it."""
    final = ckpt_root / f"step-{step}"
    if not is_main:
        return final
    tmp = ckpt_root / f".tmp-step-{step}"
    doing: dict = {}
    try:
        return _save(ckpt_root, step, final, tmp, save_weights, optimizer, scheduler, trainer_state, tokenizer, doing)
    except (OSError, RuntimeError) as err:
        # torch.save and safetensors may wrap the OSError of a failed write in a RuntimeError
        cause = err if isinstance(err, OSError) else (err.__cause__ or err.__context__)
        if not isinstance(cause, OSError):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # best effort: it has no marker either way
        raise _disk_error(cause, step, doing) from None


def _save(ckpt_root: Path, step: int, final: Path, tmp: Path, save_weights, optimizer, scheduler,
          trainer_state: dict, tokenizer, doing: dict) -> Path:
    """The save itself; `doing` tracks the operation and file under way, for the error message."""
    def at(op: str, file: Path) -> None:
        doing.update(op=op, file=file)

    at("create folder", ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a crash during an earlier save of this step
    tmp.mkdir()
    at("write weights", tmp)
    save_weights(tmp)
    _pause_for_tests()
    for name, state in (("optimizer.pt", optimizer.state_dict), ("scheduler.pt", scheduler.state_dict),
                        ("rng.pt", rng_state)):
        at("write", tmp / name)
        torch.save(state(), tmp / name)
    at("write", tmp / "trainer_state.json")
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
    if tokenizer is not None:
        at("write tokenizer", tmp)
        tokenizer.save_pretrained(tmp)
    at("fsync", tmp)
    fsync_tree(tmp)
    if final.exists():  # an incomplete folder of the same step from a crashed run
        at("remove stale", final)
        shutil.rmtree(final)
    at("rename", tmp)
    os.replace(tmp, final)
    at("write", final / COMPLETE)
    (final / COMPLETE).write_text(str(step))
    at("fsync", final)
    _fsync_dir(final)
    _fsync_dir(ckpt_root)
    return final


def load_training_state(path: Path, optimizer, scheduler) -> dict:
    """Restore optimizer, scheduler and RNG from a checkpoint; return its trainer_state."""
    path = Path(path)
    optimizer.load_state_dict(_load_tensors(path / "optimizer.pt"))
    scheduler.load_state_dict(_load_tensors(path / "scheduler.pt"))
    set_rng_state(_load_tensors(path / "rng.pt"))
    return json.loads((path / "trainer_state.json").read_text())


def _load_tensors(file: Path):
    """torch.load with weights_only: a file holding anything but tensors and plain containers (a
    pickle that would import or call code) is refused before any of it runs."""
    try:
        return torch.load(file, weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f" (it asks to run {blocked.group(1)})" if blocked else ""
        raise ConfigError(f"train.resume: {file}: refused, not a plain tensor file{what}; a checkpoint holds "
                          f"only tensors, so this one was tampered with or is not from tunewright") from None
    except OSError as err:
        raise ConfigError(f"train.resume: {file}: cannot read: {err.strerror or err}") from None


def complete_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint, ordered by step number (not by name)."""
    if not Path(ckpt_root).is_dir():
        return []
    found = []
    for p in Path(ckpt_root).iterdir():
        m = _STEP.match(p.name)
        if m and (p / COMPLETE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    done = complete_checkpoints(ckpt_root)
    return done[-1][1] if done else None


def prune_checkpoints(ckpt_root: Path, limit: int | None, best_step: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond `limit`, never the newest nor the best."""
    if not limit:
        return []
    done = complete_checkpoints(ckpt_root)
    keep = {done[-1][0]} if done else set()
    if best_step is not None:
        keep.add(best_step)
    removable = [(s, p) for s, p in done if s not in keep]
    excess = len(done) - max(limit, len(keep))
    removed = []
    for s, p in removable[:max(0, excess)]:
        (p / COMPLETE).unlink()  # unmark first: a crash mid-delete leaves an ignored folder
        shutil.rmtree(p)
        removed.append(p)
    return removed
