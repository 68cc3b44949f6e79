"""Checkpoints: atomic, resumable bit for bit, never unpickled.

A checkpoint folder `checkpoints/step-N/` holds what the method trains (a PEFT adapter or a plain
transformers folder), `optimizer.pt`, `scheduler.pt` and `rng.pt` (tensors only, read back with
`torch.load(weights_only=True)`), `trainer_state.json` (step, data position, best metric, history)
and the tokenizer with its chat template; beside the weights, what the regularizers and the
objective keep (`regularizers/`, `objective/`: an RL objective's rollout and value head). It is written into `.tmp-step-N`, fsynced, renamed into
place, and only then marked with a `complete` file, so a crash at any moment leaves either the
previous checkpoints or a folder without the marker, which resume ignores.

The marker is a manifest: the size and sha256 of every file. `verify` checks it before a
checkpoint is used, so a file truncated or zeroed after the save (a disk that lied about fsync, a
copy cut short, a careless edit) is found before it is loaded: `resume: auto` then falls back to the
previous checkpoint, and an explicit path is refused with the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from tunewright.disk import DiskWriteError, as_disk_fault, disk_error, fsync_dir
from tunewright.errors import ConfigError

__all__ = ["fsync_tree", "save_checkpoint", "CheckpointWriteError", "load_training_state", "read_trainer_state",
           "complete_checkpoints",
           "latest_checkpoint", "verify", "prune_checkpoints", "COMPLETE"]

COMPLETE = "complete"
_STEP = re.compile(r"^step-(\d+)$")


class CheckpointWriteError(DiskWriteError):
    """A save failed on the disk (full, read-only, ...). The previous checkpoints are untouched, and
    the half-written `.tmp-step-N` folder is never taken for a checkpoint (it has no marker)."""


def fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(path)


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(folder: Path) -> dict[str, list]:
    """{relative path: [size in bytes, sha256]} of every file under `folder` but the marker."""
    return {str(p.relative_to(folder)): [p.stat().st_size, _sha256(p)]
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != COMPLETE}


def verify(folder: Path) -> str | None:
    """Why the checkpoint `folder` cannot be used, or None when its files match its manifest.

    A marker holding only the step number (written before manifests existed) is accepted as is."""
    marker = Path(folder) / COMPLETE
    if not marker.is_file():
        return f"no '{COMPLETE}' marker: the save did not finish"
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return f"its '{COMPLETE}' marker is unreadable"
    if not isinstance(recorded, dict):
        return None  # an older marker without a manifest
    for name, (size, digest) in recorded.get("files", {}).items():
        file = Path(folder) / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size:,} bytes, the save wrote {size:,} (truncated or changed)"
        if _sha256(file) != digest:
            return f"{name} does not match its checksum (corrupted or changed after the save)"
    return None
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
    except Exception as err:  # noqa: BLE001 - re-raised unless the disk refused the write
        # torch.save and safetensors report a full or read-only disk in their own exception types
        fault = as_disk_fault(err, doing.get("file"))
        if fault is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # best effort: it has no marker either way
        raise CheckpointWriteError(str(disk_error(
            fault, doing.get("file"), f"saving checkpoint step-{step}: {doing.get('op', 'write')}",
            "earlier checkpoints are intact (free space or fix permissions, then resume)"))) from None


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
    at("checksum", tmp)
    files = manifest(tmp)
    if final.exists():  # an incomplete folder of the same step from a crashed run
        at("remove stale", final)
        shutil.rmtree(final)
    at("rename", tmp)
    os.replace(tmp, final)
    at("write", final / COMPLETE)
    (final / COMPLETE).write_text(json.dumps({"step": step, "files": files}, indent=0))
    at("fsync", final / COMPLETE)
    with open(final / COMPLETE, "rb") as f:  # the marker's bytes too: an empty marker is no manifest
        os.fsync(f.fileno())
    fsync_dir(final)
    fsync_dir(ckpt_root)
    return final


def load_training_state(path: Path, optimizer, scheduler) -> dict:
    """Restore optimizer, scheduler and RNG from a checkpoint; return its trainer_state."""
    path = Path(path)
    optimizer.load_state_dict(_load_tensors(path / "optimizer.pt"))
    scheduler.load_state_dict(_load_tensors(path / "scheduler.pt"))
    set_rng_state(_load_tensors(path / "rng.pt"))
    return read_trainer_state(path)


def read_trainer_state(path: Path) -> dict:
    file = Path(path) / "trainer_state.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"train.resume: {file}: cannot read: {getattr(err, 'strerror', None) or err}") from None


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
    except RuntimeError as err:  # torch's zip reader on a truncated or overwritten file
        raise ConfigError(f"train.resume: {file}: cannot read: truncated or corrupted "
                          f"({str(err).splitlines()[0][:120]})") from None


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
