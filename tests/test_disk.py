"""Disk faults in each writer's own shape become one `DiskWriteError` line; other errors pass."""

import errno
import os

import pytest

from tunewright.disk import DiskWriteError, as_disk_fault, write_text_atomic, writing


def test_each_writers_shape_is_recognised(tmp_path):
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/metrics.jsonl")
    assert as_disk_fault(enospc) is enospc
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.EROFS, os.strerror(errno.EROFS))
    assert as_disk_fault(wrapped).errno == errno.EROFS
    safetensors = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    assert as_disk_fault(safetensors, "/x/a.safetensors").errno == errno.ENOSPC
    torch_ro = RuntimeError("[enforce fail at inline_container.cc:747] . open file failed with strerror: "
                            "Read-only file system")
    assert as_disk_fault(torch_ro, "/x/o.pt").errno == errno.EROFS
    # torch's "unexpected pos" has no errno: it counts as a full disk only when the disk is full
    assert as_disk_fault(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
                         tmp_path / "o.pt") is None
    assert as_disk_fault(ValueError("a bug")) is None
    assert as_disk_fault(OSError(errno.ENOENT, "No such file")) is None


def test_writing_turns_a_fault_into_one_line_and_lets_others_through(tmp_path):
    with pytest.raises(DiskWriteError) as err:
        with writing(tmp_path / "f", "write the thing", "free space"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "f"))
    assert str(err.value) == f"{tmp_path / 'f'}: write the thing failed: ENOSPC (No space left on device); free space"
    with pytest.raises(KeyError):
        with writing(tmp_path / "f"):
            raise KeyError("not a disk fault")


def test_write_text_atomic_replaces_whole(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
