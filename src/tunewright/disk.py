"""Disk faults as one line, whoever was writing: our own code, torch.save or safetensors.

A full disk, a read-only filesystem or a denied permission reaches us in three shapes:
  OSError(ENOSPC, ..., filename)                           Python's own writes
  RuntimeError("[enforce fail at inline_container.cc:...]") torch.save (no errno: "unexpected pos"
                                                            when the disk filled, "strerror: ..." when
                                                            it could not open the file)
  SafetensorError("... I/O error: ... (os error 28) ...")  safetensors, and PEFT's adapter save
`as_disk_fault` recognises all three and `writing(...)` turns them into `DiskWriteError`: the file,
the operation, the errno name and what to do, e.g.

    runs/x/metrics.jsonl: append a metrics line failed: ENOSPC (No space left on device); ...
"""

from __future__ import annotations

import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path

from tunewright.errors import TunewrightError

__all__ = ["DiskWriteError", "as_disk_fault", "disk_error", "writing", "write_text_atomic", "fsync_dir"]

# errors that say "the disk refused", as opposed to a bug or a bad value
FAULTS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EIO, errno.EFBIG}
_STRERRORS = {os.strerror(code): code for code in FAULTS}


class DiskWriteError(TunewrightError):
    """A write failed on the disk (full, read-only, no permission). What was written before is intact."""


def _free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem holding `path` (or its nearest existing parent)."""
    for p in (path, *path.parents):
        try:
            st = os.statvfs(p)
            return st.f_bavail * st.f_frsize
        except OSError:
            continue
    return None


def as_disk_fault(err: BaseException, file: str | Path | None = None) -> OSError | None:
    """The OSError behind `err` when it is a disk fault, else None."""
    for e in (err, err.__cause__, err.__context__):
        if isinstance(e, OSError) and e.errno in FAULTS:
            return e
    text = str(err)
    m = re.search(r"os error (\d+)", text)
    if m and int(m.group(1)) in FAULTS:
        code = int(m.group(1))
        return OSError(code, os.strerror(code), str(file) if file else None)
    if "inline_container" in text:  # torch.save's C++ writer keeps no errno
        m = re.search(r"strerror: ([^\n]+)", text)
        if m and m.group(1).strip() in _STRERRORS:
            code = _STRERRORS[m.group(1).strip()]
            return OSError(code, os.strerror(code), str(file) if file else None)
        free = _free_bytes(Path(file)) if file else None
        if free is not None and free < (1 << 20):  # "unexpected pos": the write stopped short, the disk is full
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
    return None


def disk_error(fault: OSError, file, op: str, after: str) -> DiskWriteError:
    """One line: which file, which operation, which errno, and what to do."""
    code = errno.errorcode.get(fault.errno, str(fault.errno)) if fault.errno is not None else "?"
    where = fault.filename or file or "?"
    return DiskWriteError(f"{where}: {op} failed: {code} ({fault.strerror or fault}); {after}")


@contextmanager
def writing(file, op: str = "write", after: str = "free space or fix permissions, then try again"):
    """Turn a disk fault raised inside the block into a one-line DiskWriteError about `file`."""
    try:
        yield
    except DiskWriteError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised unless it is a disk fault
        fault = as_disk_fault(err, file)
        if fault is None:
            raise
        raise disk_error(fault, file, op, after) from None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so a reader (or a crash) sees the old file or the new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)
