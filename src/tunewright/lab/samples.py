"""The small data samples bundled with the recipes (recipes/data), located from the package."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["samples_dir", "sample_texts"]


def samples_dir() -> Path:
    """recipes/data of the source tree (the package is installed editable from it)."""
    return Path(__file__).resolve().parents[3] / "recipes" / "data"


def sample_texts() -> list[str]:
    """All strings of the bundled alpaca sample, as a tokenizer-training corpus."""
    path = samples_dir() / "alpaca_sample.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [v for row in rows for v in row.values() if isinstance(v, str) and v]
