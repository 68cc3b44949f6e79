"""Keep credentials out of what a run writes: logs, saved configs, checkpoints.

Hub tokens (`hf_...`) and `token=`/`password=`/`api_key=` values inside names, paths or URLs are
replaced by `***` in every text tunewright writes itself. Tokens in the environment are never
read into a config, so they cannot leak through one.
"""

from __future__ import annotations

import re

__all__ = ["redact", "redact_tree"]

_PATTERNS = [
    re.compile(r"hf_[A-Za-z0-9]{20,}"),
    re.compile(r"(?i)((?:token|password|passwd|api[_-]?key|secret)=)[^&\s/'\"]+"),
]


def redact(text: str) -> str:
    text = _PATTERNS[0].sub("hf_***", text)
    return _PATTERNS[1].sub(r"\1***", text)


def redact_tree(value):
    """`redact` applied to every string of a nested dict/list (a dumped config, a trainer state)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v) for v in value]
    return value
