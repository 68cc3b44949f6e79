"""Tokenization cache: reuse tokenized data only when nothing that shapes the tokens has changed.

The key is a sha256 over
  data       the source files' bytes (or a content hash of the examples) and how they were read,
  tokenizer  its backend json, special tokens, added tokens and chat template,
  settings   every DataConfig field that changes tokens, plus the resolved template text.
An entry is a folder `<cache>/<key>/` holding `tokens.safetensors` (flat int32 `input_ids` and
`labels`, int64 `offsets` [rows + 1]) and `meta.json` (stats, row sources, the key's parts). It is
written to a temporary folder and renamed into place, so readers (other ranks included) see a
whole entry or none. No pickle anywhere.

Where: `data.cache_dir`, else `$TUNEWRIGHT_CACHE/tokenized`, else `~/.cache/tunewright/tokenized`.
`COUNTERS` and the `tunewright.data.cache` log line say whether tokenization ran or the cache hit.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable

from tunewright.disk import as_disk_fault
from tunewright.data.tokenize import TokenStats
from tunewright.data.types import Encoded, Example

__all__ = ["cached_tokenize", "cache_root", "cache_key", "examples_hash", "tokenizer_fingerprint",
           "COUNTERS", "TOKEN_SETTINGS", "FORMAT_VERSION"]

log = logging.getLogger("tunewright.data.cache")

# Bump when encode(), render() or the entry layout changes meaning: the key also holds the package
# version, but a development tree keeps one version across such changes (3: alpaca's input folded
# into chat templates that do not read it).
FORMAT_VERSION = 3
# DataConfig fields that change the tokens of a row; the rest (packing, batching) act later.
TOKEN_SETTINGS = ("template", "system_prompt", "cutoff_len", "truncation", "train_on_inputs", "train_on_turns",
                  "add_eos_token", "max_prompt_len", "min_response_words")
COUNTERS = {"hits": 0, "misses": 0}  # this process's cache use, for tests and the run log


def _trace(event: str, key: str) -> None:
    """With $TUNEWRIGHT_TRACE_TOKENIZE set, append `rank world event key` to that file: lets a test
    of a multi-process run count how often each rank tokenized (each process has its own COUNTERS)."""
    path = os.environ.get("TUNEWRIGHT_TRACE_TOKENIZE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.environ.get('RANK', '0')} {os.environ.get('WORLD_SIZE', '1')} {event} {key}\n")


def cache_root(cfg) -> Path:
    """The folder holding cache entries for `cfg` (a DataConfig)."""
    if getattr(cfg, "cache_dir", None):
        return Path(cfg.cache_dir).expanduser()
    base = os.environ.get("TUNEWRIGHT_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "tunewright") / "tokenized"


def _sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def examples_hash(examples: Iterable[Example]) -> str:
    """sha256 of the examples' content (messages, segments, flags, sources), for data with no files."""
    h = hashlib.sha256()
    for ex in examples:
        row = {"source": ex.source, "line": ex.line,
               "messages": [[m.role, m.content, m.train, m.context] for m in ex.messages or []]
               if ex.messages is not None else None,
               "segments": [[s.text, s.train] for s in ex.segments] if ex.segments is not None else None}
        if ex.meta:  # the phrasing drawn (stored with the rows); absent keys keep older keys valid
            row["meta"] = ex.meta
        if ex.responses is not None:  # only then, so the hashes of existing caches stay what they were
            row["responses"] = [[[m.role, m.content, m.train, m.context] for m in r] for r in ex.responses]
            row["label"] = ex.label
        h.update(json.dumps(row, ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 over what decides a tokenizer's output: backend json, special and added tokens, template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        core = backend.to_str() if backend is not None else None
    except Exception:  # some backends cannot serialize; the vocabulary then stands in
        core = None
    if core is None:
        core = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    parts = {
        "class": type(tokenizer).__name__,
        "backend": hashlib.sha256(core.encode()).hexdigest(),
        "special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
        "added": {str(i): str(t) for i, t in sorted(tokenizer.added_tokens_decoder.items())},
        "chat_template": tokenizer.chat_template if isinstance(tokenizer.chat_template, (str, type(None)))
        else json.dumps(tokenizer.chat_template, sort_keys=True),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _data_part(examples_key: dict) -> dict:
    """`examples_key` with each path under `files` replaced by (path, sha256 of its bytes) and a
    list under `examples` by its content hash."""
    part = {k: v for k, v in examples_key.items() if k != "files"}
    if "examples" in part and not isinstance(part["examples"], str):
        part["examples"] = examples_hash(part["examples"])
    files = examples_key.get("files") or []
    part["files"] = [[str(p), _sha256_file(p) if Path(p).is_file() else _sha256_tree(p)] for p in files]
    return part


def _sha256_tree(folder) -> str:
    """sha256 over a folder's files (a `datasets` saved folder), by relative path and bytes."""
    h = hashlib.sha256()
    root = Path(folder)
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0" + _sha256_file(p).encode())
    return h.hexdigest()


def _package_version() -> str:
    from tunewright.version import __version__
    return __version__


def cache_key(examples_key: dict, tokenizer, template: str, cfg) -> tuple[str, dict]:
    """(hex key, the parts it was made from).

    `examples_key` names the data: {"files": [paths]} (hashed by bytes) and/or {"examples": the
    Example list or its `examples_hash`}, plus any json values that shape the rows (format,
    columns, split, seed).
    """
    import tokenizers

    parts = {
        "version": FORMAT_VERSION,
        "tunewright": _package_version(),
        "tokenizers": tokenizers.__version__,
        "data": _data_part(examples_key),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "template": hashlib.sha256(template.encode()).hexdigest(),
        "settings": {k: getattr(cfg, k) for k in TOKEN_SETTINGS},
    }
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32], parts


# ------------------------------------------------------------------ reading and writing entries

def _write(folder: Path, encoded: list[Encoded], stats: TokenStats, parts: dict) -> None:
    import torch
    from safetensors.torch import save_file

    flat_ids = [i for e in encoded for i in e.input_ids]
    flat_labels = [i for e in encoded for i in e.labels]
    # labels have their own offsets: an encoder-decoder row's target is not as long as its input
    save_file({"input_ids": torch.tensor(flat_ids, dtype=torch.int32),
               "labels": torch.tensor(flat_labels, dtype=torch.int32),
               "offsets": _offsets([len(e.input_ids) for e in encoded]),
               "label_offsets": _offsets([len(e.labels) for e in encoded])}, str(folder / "tokens.safetensors"))
    sources = list(dict.fromkeys(e.source for e in encoded))
    index = {s: i for i, s in enumerate(sources)}
    meta = {"version": FORMAT_VERSION, "stats": stats.to_dict(), "key_parts": parts, "sources": sources,
            "rows": [[index[e.source], e.line, e.meta] for e in encoded]}
    with open(folder / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())


def _offsets(lengths: list[int]):
    """[rows + 1] int64: row i spans [offsets[i], offsets[i + 1])."""
    import torch
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    if lengths:
        offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
    return offsets


def _read(folder: Path) -> tuple[list[Encoded], TokenStats]:
    from safetensors.torch import load_file

    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"cache format {meta.get('version')}, expected {FORMAT_VERSION}")
    tensors = load_file(str(folder / "tokens.safetensors"))
    ids, labels = tensors["input_ids"].tolist(), tensors["labels"].tolist()
    offsets, label_offsets = tensors["offsets"].tolist(), tensors["label_offsets"].tolist()
    rows = meta["rows"]
    if (len(offsets) != len(rows) + 1 or offsets[-1] != len(ids) or len(label_offsets) != len(rows) + 1
            or label_offsets[-1] != len(labels)):
        raise ValueError("offsets do not match the stored tokens")
    sources = meta["sources"]
    encoded = [Encoded(ids[offsets[i]:offsets[i + 1]], labels[label_offsets[i]:label_offsets[i + 1]],
                       sources[src], line, row_meta) for i, (src, line, row_meta) in enumerate(rows)]
    stats = TokenStats.from_dict(meta["stats"])
    stats.from_cache = True
    return encoded, stats


def cached_tokenize(examples_key: dict, tokenizer, template: str, cfg,
                    build: Callable[[], tuple[list[Encoded], TokenStats]]) -> tuple[list[Encoded], TokenStats]:
    """Return the cached (encoded rows, stats) for this data, tokenizer and settings, or run `build()`
    (usually `lambda: tokenize_examples(...)`) and store its result. A damaged entry is rebuilt."""
    key, parts = cache_key(examples_key, tokenizer, template, cfg)
    root = cache_root(cfg)
    folder = root / key
    if folder.is_dir():
        try:
            encoded, stats = _read(folder)
        except Exception as e:  # half-deleted or foreign folder: tokenize again, never trust it
            log.warning("tokenization cache entry %s unreadable (%s); rebuilding", folder, e)
            shutil.rmtree(folder, ignore_errors=True)
        else:
            COUNTERS["hits"] += 1
            _trace("hit", key)
            log.info("tokenization cache hit: %s", folder)
            return encoded, stats
    COUNTERS["misses"] += 1
    _trace("miss", key)
    log.info("tokenization cache miss: tokenizing into %s", folder)
    encoded, stats = build()
    try:
        _store(root, folder, key, encoded, stats, parts)
    except Exception as err:  # noqa: BLE001 - only a disk fault is survivable here
        fault = as_disk_fault(err, root)
        if fault is None:
            raise
        # the cache only saves time: a full or read-only cache disk must not stop the run
        warnings.warn(f"tokenization cache: cannot store the tokenized rows under {root}: "
                      f"{errno.errorcode.get(fault.errno, fault.errno)} ({fault.strerror}); training goes on "
                      f"without caching them (data.cache_dir moves the cache to a disk with space)", stacklevel=2)
    return encoded, stats


def _store(root: Path, folder: Path, key: str, encoded, stats, parts) -> None:
    """Write an entry into a temporary folder and rename it into place (whole or absent)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    try:
        _write(tmp, encoded, stats, parts)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process (rank) stored the same entry first: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
