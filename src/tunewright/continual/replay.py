"""Replay: a buffer of earlier tasks' training rows mixed into each later task's data.

The buffer is raw rows (as the task's source files hold them), kept as JSON in the task's run
folder. It is mixed in as one more data source whose mixture weight makes replayed rows `ratio`
of the task's training rows:

    n_buffer · w / (n_task + n_buffer · w) = ratio   =>   w = ratio · n_task / ((1 − ratio) · n_buffer)

so the replayed rows go through the run's own seeded mixture and epoch plan (data/mixture.py,
data/batching.py): a batch holds them in proportion over the run, and a resumed task sees the same
rows in the same batches (the buffer file is part of the data the resume key digests).

Selection (which rows the buffer keeps, `buffer_size` at most):

    reservoir   Vitter's (1985) algorithm R over the stream of every earlier task's rows: after n rows
                seen, each is in the buffer with probability buffer_size / n, whatever its task
    per_task    an equal quota per task seen so far (buffer_size // tasks), each a seeded uniform
                sample of its task; a new task shrinks the older quotas to a prefix of their sample

Both are seeded by (train.seed, rows seen so far), so a sequence rerun keeps the same buffer.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

from pydantic import Field

from tunewright.disk import write_text_atomic
from tunewright.sections import Section

__all__ = ["Config", "empty", "update", "reservoir", "per_task", "mix_weight", "write_source", "save", "load"]


class Config(Section):
    name: Literal["replay"] = Field("replay", description="Replay: mix a buffer of earlier tasks' rows into each task.")
    buffer_size: int = Field(200, ge=1, description="Rows the buffer keeps at most, over all earlier tasks.")
    selection: Literal["reservoir", "per_task"] = Field("reservoir", description=(
        "reservoir: a uniform sample of every row seen; per_task: an equal seeded quota per earlier task."))
    ratio: float = Field(0.1, gt=0, lt=1, description="Share of a task's training rows that are replayed rows.")


def empty() -> dict:
    """A buffer before the first task: rows kept (each {"task", "row"}) and rows seen."""
    return {"rows": [], "seen": 0}


def reservoir(buffer: dict, task: str, rows: list[dict], size: int, seed: int) -> dict:
    """Algorithm R: the first `size` rows fill the buffer; the n-th row seen after that replaces a
    uniformly drawn slot with probability size / n (j drawn from 0..n-1 over the *whole stream*,
    not the task, so older tasks keep their share)."""
    kept, seen = list(buffer["rows"]), buffer["seen"]
    rng = random.Random(f"tunewright-replay-{seed}-{seen}")
    for row in rows:
        seen += 1
        if len(kept) < size:
            kept.append({"task": task, "row": row})
        else:
            j = rng.randrange(seen)
            if j < size:
                kept[j] = {"task": task, "row": row}
    return {"rows": kept, "seen": seen}


def per_task(buffer: dict, task: str, rows: list[dict], size: int, seed: int) -> dict:
    """An equal quota per task: the older tasks' samples cut to the new quota (a prefix of a seeded
    uniform sample is one too), the new task's a seeded sample of its rows."""
    tasks = list(dict.fromkeys(r["task"] for r in buffer["rows"])) + [task]
    quota = size // len(tasks)
    kept = [r for t in tasks[:-1] for r in [x for x in buffer["rows"] if x["task"] == t][:quota]]
    rng = random.Random(f"tunewright-replay-{seed}-{buffer['seen']}")
    kept += [{"task": task, "row": row} for row in rng.sample(rows, min(quota, len(rows)))]
    return {"rows": kept, "seen": buffer["seen"] + len(rows)}


SELECTIONS = {"reservoir": reservoir, "per_task": per_task}


def update(buffer: dict, task: str, rows: list[dict], cfg: Config, seed: int) -> dict:
    """The buffer after task `task` (its training rows `rows`) was trained."""
    return SELECTIONS[cfg.selection](buffer, task, rows, cfg.buffer_size, seed)


def mix_weight(n_task: int, n_buffer: int, ratio: float) -> float:
    """The buffer source's mixture weight that makes replayed rows `ratio` of the training rows."""
    return ratio * n_task / ((1 - ratio) * n_buffer)


def write_source(buffer: dict, path: Path, fmt: str, n_task: int, ratio: float) -> dict:
    """Write the buffer's rows to `path` (JSON lines) and return the data source (a `data.datasets`
    item) that mixes them in at `ratio`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r["row"], ensure_ascii=False) + "\n" for r in buffer["rows"]))
    return {"path": str(path), "format": fmt, "weight": mix_weight(n_task, len(buffer["rows"]), ratio)}


def save(buffer: dict, path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(path), json.dumps(buffer, ensure_ascii=False))


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
