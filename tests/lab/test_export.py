"""export_task: three UTF-8 jsonl files, byte-identical for a seed, never overwritten by accident."""

from __future__ import annotations

import json

import pytest

from tunewright.errors import ConfigError
from tunewright.lab.export import export_task
from tunewright.lab.tasks import make_task

SMALL = dict(n_train=40, n_val=5, n_test=8)


def test_writes_one_json_object_a_line_per_split(tmp_path):
    paths = export_task("extraction", tmp_path / "out", seed=1, fmt="messages", **SMALL)
    assert [p.name for p in paths] == ["train.jsonl", "validation.jsonl", "test.jsonl"]
    expected = make_task("extraction", seed=1, fmt="messages", **SMALL)
    for path, split in zip(paths, ["train", "validation", "test"]):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == expected[split]
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = [p.read_bytes() for p in export_task("topic", tmp_path / "a", seed=5, **SMALL)]
    b = [p.read_bytes() for p in export_task("topic", tmp_path / "b", seed=5, **SMALL)]
    c = [p.read_bytes() for p in export_task("topic", tmp_path / "c", seed=6, **SMALL)]
    assert a == b and all(x != y for x, y in zip(a, c))


def test_non_ascii_is_written_as_utf8(tmp_path):
    path = export_task("arithmetic", tmp_path, ops="*", **SMALL)[0]
    text = path.read_text(encoding="utf-8")
    assert "×" in text and "\\u00d7" not in text


def test_refuses_to_overwrite_unless_asked(tmp_path):
    export_task("arithmetic", tmp_path, **SMALL)
    (tmp_path / "validation.jsonl").write_text("keep me\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train.jsonl: exists; pass overwrite=True"):
        export_task("arithmetic", tmp_path, seed=9, **SMALL)
    assert (tmp_path / "validation.jsonl").read_text(encoding="utf-8") == "keep me\n"
    export_task("arithmetic", tmp_path, seed=9, overwrite=True, **SMALL)
    assert len((tmp_path / "validation.jsonl").read_text(encoding="utf-8").splitlines()) == 5


def test_bad_task_or_option_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="did you mean"):
        export_task("extracton", tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        export_task("extraction", tmp_path / "x", colour="red")
    assert not (tmp_path / "x").exists()
