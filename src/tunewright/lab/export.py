"""Write a lab task's splits as jsonl files: what `tunewright lab export --task NAME --out DIR` runs.

    export_task("extraction", "data/extraction", seed=0, fmt="messages")
    -> [data/extraction/train.jsonl, data/extraction/validation.jsonl, data/extraction/test.jsonl]

UTF-8, one JSON object a line, keys in the generator's order. Existing files are kept unless
`overwrite=True`: all three are checked before any is written, so a refusal leaves the folder as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunewright.errors import ConfigError
from tunewright.lab.tasks import make_task
from tunewright.lab.world import SPLITS

__all__ = ["export_task"]


def export_task(name: str, out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False,
                **options) -> list[Path]:
    """Generate task `name` (options as `make_task`) and write `<split>.jsonl` for each split into
    `out_dir` (created if missing). Returns the paths in split order."""
    out = Path(out_dir)
    paths = [out / f"{split}.jsonl" for split in SPLITS]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]}: exists; pass overwrite=True (--overwrite) to replace "
                          f"{'it' if len(existing) == 1 else f'the {len(existing)} existing files'}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; --out needs a folder")
    splits = make_task(name, seed=seed, **options)  # before touching the folder: bad options write nothing
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # --out is a file, or below one, or not writable
        raise ConfigError(f"{out}: cannot create the output folder ({err.strerror or err})") from None
    for split, path in zip(SPLITS, paths):
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in splits[split])
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # a reader never sees a half-written file
    return paths
