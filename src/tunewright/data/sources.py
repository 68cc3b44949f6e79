"""Where rows come from: local json/jsonl/csv/parquet files, a `datasets` saved folder, or a hub
dataset. Every reader returns `(line, row)` pairs, `line` being what a user opens an editor at:

    json     the file line where the object starts (a top-level list of objects)
    jsonl    the file line (blank lines skipped)
    csv      the file line where the row starts (the header is line 1)
    parquet, saved folder, hub    row index + 1

Whole-file problems (missing, empty, not a list, unknown split, a FIFO or a device instead of a
file) always raise `DataError`. Problems of one row (a malformed jsonl line, a csv row with the
wrong number of fields, a list item that is not an object) raise too, unless the caller passes an
`errors` list: then they are appended there and reading goes on, so `data.on_error: skip` can
count them.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import stat
from json.decoder import WHITESPACE
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tunewright.errors import DataError
from tunewright.registry import suggest

if TYPE_CHECKING:  # annotations only: the schema imports this package
    from tunewright.schema import DataSource

__all__ = ["read_rows", "READERS", "EXTENSIONS", "file_type_of", "path_kind"]

Rows = list[tuple[int, dict]]

# File extension -> reader name, for `file_type: auto`.
EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}

_BOM = b"\xef\xbb\xbf"  # Excel and Notepad write it; it is not part of the first column's name


def read_rows(src: DataSource, errors: list[DataError] | None = None) -> Rows:
    """Read every row of `src` as `(line, dict)` in file order.

    With `errors=None` the first bad row raises; with a list, bad rows are appended to it (in file
    order) and left out of the result, so `len(result) + len(errors)` is the number of rows seen.
    """
    path = Path(src.path).expanduser()
    try:
        what = path_kind(path)
    except OSError as err:  # a name too long, a folder without permission
        raise DataError(src.path, None, None, f"cannot read it: {err.strerror or err}") from None
    if what == "a folder":
        return _read_saved(src, path)
    if what not in ("file", "missing"):
        raise DataError(src.path, None, None, f"is {what}, not a data file")
    if what == "file":
        kind = file_type_of(src)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DataError(src.path, None, None, f"cannot read it: {err.strerror or err}") from None
        if not data.strip():
            raise DataError(src.path, None, None, "file is empty")
        rows = READERS[kind](src.path, data.removeprefix(_BOM), errors)
        if not rows and not errors:
            raise DataError(src.path, None, None, "file holds no rows")
        return rows
    if _looks_local(src.path):
        raise DataError(src.path, None, None, _missing(path))
    return _read_hub(src)


_SPECIAL = [(stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def path_kind(path: Path) -> str:
    """"file", "missing", or what else `path` is, in words: "a folder", "a FIFO (named pipe)", "a
    character device", ... A special file is refused by name: reading it would wait forever on a pipe
    without a writer, or never end (/dev/zero). Raises OSError when stat cannot tell (a name too long,
    no permission)."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((what for test, what in _SPECIAL if test(mode)), "not a regular file")


def file_type_of(src: DataSource) -> str:
    """The reader for a local file: `src.file_type`, or by extension when it is `auto`."""
    if src.file_type != "auto":
        return src.file_type
    ext = Path(src.path).suffix.lower()
    if ext not in EXTENSIONS:
        raise DataError(src.path, None, "file_type",
                        f"unknown file extension {ext or '(none)'!r}{suggest(ext, EXTENSIONS)}; "
                        f"rename the file or set file_type to one of json, jsonl, csv, parquet")
    return EXTENSIONS[ext]


# ---------------------------------------------------------------- local files

def _reject(errors: list[DataError] | None, err: DataError) -> None:
    """Raise a bad row's error, or record it when the caller collects them."""
    if errors is None:
        raise err
    errors.append(err)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _decode(file: str, data: bytes) -> str:
    """UTF-8 text of a whole file; a bad byte is reported at its line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(file, line, None, f"not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column})") from None


def _read_jsonl(file: str, data: bytes, errors: list[DataError] | None) -> Rows:
    rows: Rows = []
    # Split the bytes, not the text, so one line of bad UTF-8 is one skippable row.
    for line, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            bad = f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
            _reject(errors, DataError(file, line, None, bad))
            continue
        except json.JSONDecodeError as e:
            _reject(errors, DataError(file, line, None, f"invalid JSON: {e.msg} (column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            _reject(errors, DataError(file, line, None, f"expected a JSON object, got {_kind(obj)}"))
            continue
        rows.append((line, obj))
    return rows


def _read_json(file: str, data: bytes, errors: list[DataError] | None) -> Rows:
    """A top-level list of objects, parsed item by item so each row knows its line.

    A `.json` file that is really JSON lines (what `datasets` also accepts) is read as jsonl.
    """
    text = _decode(file, data)
    pos = WHITESPACE.match(text, 0).end()
    if not text.startswith("[", pos):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg == "Extra data" and text.startswith("{", pos):
                return _read_jsonl(file, data, errors)
            raise DataError(file, e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
        hint = ""
        if isinstance(whole, dict):
            lists = [k for k, v in whole.items() if isinstance(v, list)]
            hint = f"; the rows may be under key {lists[0]!r}: make that list the whole file" if lists else ""
        raise DataError(file, 1, None, f"expected a top-level list of objects, got {_kind(whole)}{hint}")

    decoder = json.JSONDecoder()
    rows: Rows = []
    line, seen = 1, 0  # line of text[seen]; counted incrementally to stay linear in file size

    def line_at(at: int) -> int:
        nonlocal line, seen
        line += text.count("\n", seen, at)
        seen = at
        return line

    pos = WHITESPACE.match(text, pos + 1).end()
    if text.startswith("]", pos):
        end = pos + 1
    else:
        while True:
            try:
                obj, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise DataError(file, e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
            at = line_at(pos)
            if isinstance(obj, dict):
                rows.append((at, obj))
            else:
                _reject(errors, DataError(file, at, None, f"expected a JSON object, got {_kind(obj)}"))
            pos = WHITESPACE.match(text, end).end()
            if text.startswith(",", pos):
                pos = WHITESPACE.match(text, pos + 1).end()
                continue
            if text.startswith("]", pos):
                end = pos + 1
                break
            raise DataError(file, line_at(pos), None, "invalid JSON: expected ',' or ']' after a list item")
    rest = WHITESPACE.match(text, end).end()
    if rest < len(text):
        raise DataError(file, line_at(rest), None, "invalid JSON: extra data after the top-level list")
    return rows


def _read_csv(file: str, data: bytes, errors: list[DataError] | None) -> Rows:
    text = _decode(file, data)
    # Long texts (a whole article in one cell) pass the 128 KiB default field limit.
    csv.field_size_limit(2**31 - 1)
    # strict: an unclosed quote is an error, not a cell that silently swallows every later row
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: Rows = []
    header: list[str] | None = None
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(file, start, None, f"malformed CSV: {e}") from None
        line, start = start, reader.line_num + 1  # a quoted cell may span lines: the row starts at `line`
        if not cells:
            continue
        if header is None:
            dupes = sorted({c for c in cells if cells.count(c) > 1})
            if dupes:
                raise DataError(file, line, dupes[0], "column name appears twice in the header")
            header = cells
            continue
        if len(cells) != len(header):
            _reject(errors, DataError(file, line, None, f"row has {len(cells)} fields, the header has {len(header)}"))
            continue
        rows.append((line, dict(zip(header, cells))))
    return rows


def _read_parquet(file: str, data: bytes, errors: list[DataError] | None) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(pa.BufferReader(data)).to_pylist()
    # corrupted metadata can also surface as a decode or value error from pyarrow's internals
    except (pa.ArrowException, OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(file, None, None, f"not a readable parquet file: {e}") from None
    return [(i + 1, row) for i, row in enumerate(rows)]


READERS: dict[str, Callable[[str, bytes, list[DataError] | None], Rows]] = {
    "json": _read_json, "jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet,
}


def _looks_local(name: str) -> bool:
    """A missing path the user meant as a file (not a hub name like `tatsu-lab/alpaca`)."""
    p = Path(name).expanduser()
    return (p.suffix.lower() in EXTENSIONS or name.startswith(("/", "./", "../", "~", "\\"))
            or (len(p.parts) > 1 and Path(p.parts[0]).is_dir()))


def _missing(path: Path) -> str:
    folder = path.parent
    if not folder.is_dir():
        return f"no such file or folder (folder {str(folder)!r} does not exist either)"
    # Compare stems: a shared `.jsonl` would make every file look close; `train.json` for
    # `train.jsonl` (wrong extension) still matches.
    stems = {p.stem: p.name for p in sorted(folder.iterdir())}
    close = difflib.get_close_matches(path.stem, stems, n=1, cutoff=0.6)
    hint = f' (did you mean "{folder / stems[close[0]]}"?)' if close else ""
    return f"no such file or folder{hint}"


# ---------------------------------------------------------------- `datasets` folders and the hub

def _pick_split(src: DataSource, ds) -> object:
    """The `src.split` of a DatasetDict; a plain Dataset stands for the default split only."""
    from datasets import DatasetDict

    if isinstance(ds, DatasetDict):
        if src.split not in ds:
            splits = ", ".join(ds.keys())
            raise DataError(src.path, None, "split",
                            f"no split {src.split!r}{suggest(src.split, ds.keys())}; splits: {splits}")
        return ds[src.split]
    own = str(ds.split) if ds.split is not None else None
    if src.split not in ("train", own):
        raise DataError(src.path, None, "split",
                        f"no split {src.split!r}: the folder holds a single dataset without splits; "
                        "remove `split` from this source")
    return ds


def _read_saved(src: DataSource, path: Path) -> Rows:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    if not any((path / marker).is_file() for marker in ("dataset_dict.json", "state.json")):
        raise DataError(src.path, None, None,
                        "a folder, but not one written by `datasets` save_to_disk "
                        "(no dataset_dict.json or state.json); point `path` at a data file instead")
    from datasets import load_from_disk

    ds = _pick_split(src, load_from_disk(str(path)))
    rows = [(i + 1, row) for i, row in enumerate(ds.to_list())]
    if not rows:
        raise DataError(src.path, None, None, f"split {src.split!r} holds no rows")
    return rows


def _read_hub(src: DataSource) -> Rows:
    """A hub dataset through `datasets.load_dataset` (imported here: it is slow to import)."""
    import datasets

    try:
        ds = datasets.load_dataset(src.path, src.subset, split=src.split)
    except Exception as e:  # datasets raises many types (network, not found, bad split): report each
        offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
                      for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
        why = " ".join(str(e).split()) or type(e).__name__
        note = " (offline: HF_HUB_OFFLINE is set and the dataset is not in the local cache)" if offline else ""
        raise DataError(src.path, None, None,
                        f"not a local file or folder, and cannot load it as a hub dataset{note}: {why}") from None
    rows = [(i + 1, row) for i, row in enumerate(ds)]
    if not rows:
        raise DataError(src.path, None, None, f"split {src.split!r} holds no rows")
    return rows
