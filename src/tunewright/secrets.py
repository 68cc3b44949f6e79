"""Keep credentials out of what tunewright prints and writes: error lines, logs, saved configs,
checkpoints, eval results and reports.

Three patterns are replaced by `***`, wherever they occur in a name, a path or a URL:

    URL credentials     https://user:pass@host/x      -> https://***@host/x  (user-only `token@host` too)
    key=value secrets   ?token=...  password=...  api_key=...  secret=...  signature=...  credential=...
    hub tokens          hf_ followed by 20+ letters and digits  -> hf_***

Tokens in the environment are never read into a config, so they cannot leak through one.
"""

from __future__ import annotations

import re

__all__ = ["redact", "redact_tree"]

# The userinfo of a URL: everything between `scheme://` and the last `@` of the authority. `:/` is
# matched too, because pathlib prints `https://u:p@h/x` given as a local path as `https:/u:p@h/x`.
_URL_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*:/{1,2})[^/?#\s]+@")
# A query string or `key=value` text; the value ends at the next separator (`/` too: a path segment).
# A quoted value (`secret='x'`, `token: "x"` written as `token="x"`) keeps its quotes around `***`.
_KEY_VALUE = re.compile(r"(?i)((?:token|password|passwd|api[_-]?key|secret|signature|credential)=)"
                        r"(?:'[^']*'|\"[^\"]*\"|[^&\s/'\"]+)")
_HUB_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")


def _masked(value: str) -> str:
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{quote}***{quote}"


def redact(text: str) -> str:
    """`text` with every credential pattern above replaced by `***`."""
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    text = _KEY_VALUE.sub(lambda m: m.group(1) + _masked(m.group(0)[len(m.group(1)):]), text)
    return _HUB_TOKEN.sub("hf_***", text)


def redact_tree(value):
    """`redact` applied to every string of a nested dict/list, keys included (a dumped config, a
    trainer state, eval results keyed by candidate name)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_tree(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_tree(v) for v in value)
    return value
