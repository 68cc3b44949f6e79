"""Model names that tunewright resolves to a local folder instead of a hub id.

`tiny-llama`, `tiny-qwen2`, `tiny-gpt2`, `tiny-t5`: small random-initialised models with a
tokenizer trained on the bundled samples, built once into the cache. They run every code path in
seconds (smoke modes, the demo until the default model lands) but know no language.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["cache_root", "resolve_model_name", "TINY"]

TINY = {"tiny-llama": "llama", "tiny-qwen2": "qwen2", "tiny-gpt2": "gpt2", "tiny-t5": "t5"}
_BUILD_VERSION = "1"  # bump when the tiny models' recipe changes, so caches rebuild


def cache_root() -> Path:
    """$TUNEWRIGHT_CACHE, else ~/.cache/tunewright."""
    return Path(os.environ.get("TUNEWRIGHT_CACHE") or Path.home() / ".cache" / "tunewright")


def _corpus() -> list[str]:
    from tunewright.lab.tiny import DEFAULT_CORPUS
    from tunewright.lab.samples import sample_texts
    return DEFAULT_CORPUS + sample_texts()


def resolve_model_name(name: str) -> str:
    """A local folder for an alias (building it on first use); any other name unchanged."""
    if name not in TINY:
        return name
    out = cache_root() / "models" / f"{name}-v{_BUILD_VERSION}"
    if not (out / "config.json").is_file():
        from tunewright.lab.tiny import make_tiny_model
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_tiny_model(tmp, TINY[name], corpus=_corpus(), vocab_size=4000, hidden=128, layers=2)
        os.replace(tmp, out)  # atomic: a half-built folder is never taken for a model
    return str(out)
