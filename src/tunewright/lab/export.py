"""Write a lab task's splits as jsonl files: what `tunewright lab export --task NAME --out DIR` runs.

    export_task("extraction", "data/extraction", seed=0, fmt="messages")
    -> [data/extraction/train.jsonl, data/extraction/validation.jsonl, data/extraction/test.jsonl]

    export_mixture(["arithmetic", "extraction", "world_qa"], "data/mix", held_out=["world_qa"])
    -> data/mix/<task>/<split>.jsonl per task, and data/mix/<split>.jsonl with every task's rows
       and a `task` column (for `tunewright eval`'s data.group_by); a held-out task has test rows only

UTF-8, one JSON object a line, keys in the generator's order. Existing files are kept unless
`overwrite=True`: every file is checked before any is written, so a refusal leaves the folder as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunewright.errors import ConfigError
from tunewright.lab.tasks import make_task
from tunewright.lab.world import SPLITS

__all__ = ["export_task", "export_mixture"]


def _check_out(paths: list[Path], out: Path, overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]}: exists; pass overwrite=True (--overwrite) to replace "
                          f"{'it' if len(existing) == 1 else f'the {len(existing)} existing files'}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; --out needs a folder")


def _write(path: Path, rows: list[dict]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # --out is a file, or below one, or not writable
        raise ConfigError(f"{path.parent}: cannot create the output folder ({err.strerror or err})") from None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees a half-written file


def export_task(name: str, out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False,
                **options) -> list[Path]:
    """Generate task `name` (options as `make_task`) and write `<split>.jsonl` for each split into
    `out_dir` (created if missing). Returns the paths in split order."""
    out = Path(out_dir)
    paths = [out / f"{split}.jsonl" for split in SPLITS]
    _check_out(paths, out, overwrite)
    splits = make_task(name, seed=seed, **options)  # before touching the folder: bad options write nothing
    for split, path in zip(SPLITS, paths):
        _write(path, splits[split])
    return paths


def export_mixture(names: list[str], out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False,
                   held_out: list[str] = (), **options) -> list[Path]:
    """Several tasks at once (FLAN's mixture of tasks): `<task>/<split>.jsonl` for each, and
    `<split>.jsonl` holding all of them with a `task` column. Tasks in `held_out` get test rows only
    (no training or validation rows exist to leak). Returns the combined files in split order."""
    out = Path(out_dir)
    unknown = [t for t in held_out if t not in names]
    if unknown:
        raise ConfigError(f"lab export: held-out task {unknown[0]!r} is not among the tasks {names}")
    if len(set(names)) != len(names):
        raise ConfigError(f"lab export: a task is listed twice: {names}")
    combined = [out / f"{split}.jsonl" for split in SPLITS]
    _check_out(combined + [out / t / f"{s}.jsonl" for t in names for s in SPLITS], out, overwrite)
    made = {t: make_task(t, seed=seed, **{**options, **({"n_train": 0, "n_val": 0} if t in held_out else {})})
            for t in names}  # every task generated before any file is written
    for task, splits in made.items():
        for split in SPLITS:
            _write(out / task / f"{split}.jsonl", splits[split])
    for split, path in zip(SPLITS, combined):
        _write(path, [{"task": task, **row} for task, splits in made.items() for row in splits[split]])
    return combined
