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


def test_a_mixture_writes_each_task_and_combined_files_with_a_task_column(tmp_path):
    from tunewright.lab.export import export_mixture

    paths = export_mixture(["arithmetic", "string_skills", "world_qa"], tmp_path, seed=2, held_out=["world_qa"],
                           **SMALL)
    assert [p.name for p in paths] == ["train.jsonl", "validation.jsonl", "test.jsonl"]
    combined = {p.stem: [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()] for p in paths}
    for task in ("arithmetic", "string_skills"):
        alone = make_task(task, seed=2, **SMALL)
        for split in ("train", "validation", "test"):
            rows = [json.loads(x) for x in (tmp_path / task / f"{split}.jsonl").read_text().splitlines()]
            assert rows == alone[split] == [{k: v for k, v in r.items() if k != "task"}
                                            for r in combined[split] if r["task"] == task]
    # the held-out task: test rows only, so no file of it can put a row into training
    assert (tmp_path / "world_qa" / "train.jsonl").read_text() == (tmp_path / "world_qa" / "validation.jsonl").read_text() == ""
    assert sum(r["task"] == "world_qa" for r in combined["test"]) == 8
    assert {r["task"] for r in combined["train"]} == {"arithmetic", "string_skills"}
    with pytest.raises(ConfigError, match="held-out task 'topic' is not among the tasks"):
        export_mixture(["arithmetic"], tmp_path / "x", held_out=["topic"])
    with pytest.raises(ConfigError, match="exists; pass overwrite=True"):
        export_mixture(["arithmetic", "string_skills"], tmp_path, **SMALL)


def test_the_command_exports_a_mixture_when_given_several_tasks(tmp_path, capsys):
    from tunewright.cli import main

    argv = ["lab", "export", "--task", "arithmetic", "--task", "world_qa", "--held-out", "world_qa",
            "--out", str(tmp_path), "n_train=4", "n_val=1", "n_test=2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'test.jsonl'}" in out and "data.datasets[].format: alpaca" in out
    assert len((tmp_path / "test.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "world_qa" / "train.jsonl").read_text() == ""
