"""Bad-row policy, validation splits and mixture weights."""

from __future__ import annotations

import json

import pytest

from tunewright.config import DataConfig, DataSource
from tunewright.data.mixture import build_splits, load_examples
from tunewright.errors import ConfigError, DataError


def _write(path, n: int, tag: str, bad: dict[int, str] | None = None) -> str:
    """A jsonl of `n` alpaca rows `tag-i`; `bad` replaces line i (1-based) with raw text."""
    lines = [json.dumps({"instruction": f"{tag}-{i}", "output": "ok"}) for i in range(n)]
    for line, text in (bad or {}).items():
        lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _cfg(*paths, weights=None, **kw) -> DataConfig:
    weights = weights or [1.0] * len(paths)
    return DataConfig(datasets=[DataSource(path=p, weight=w) for p, w in zip(paths, weights)], **kw)


def _ids(examples) -> list[str]:
    return [ex.messages[0].content for ex in examples]


BAD = {2: "{broken", 5: json.dumps({"instruction": "x"}), 9: json.dumps({"instruction": "y", "output": 3})}


# ---------------------------------------------------------------- on_error

def test_raise_reports_the_first_bad_row_in_file_order(tmp_path):
    # line 2 is unreadable and line 1 unformattable: line 1 comes first
    p = _write(tmp_path / "d.jsonl", 4, "r", {1: json.dumps({"output": "o"}), 2: "{broken"})
    cfg = _cfg(p)
    with pytest.raises(DataError) as info:
        load_examples(cfg.datasets[0], cfg)
    assert (info.value.line, info.value.field) == (1, "instruction")
    p = _write(tmp_path / "e.jsonl", 4, "r", {2: "{broken", 3: json.dumps({"output": "o"})})
    with pytest.raises(DataError) as info:
        load_examples(DataSource(path=p), cfg)
    assert info.value.line == 2 and "invalid JSON" in info.value.reason


def test_skip_keeps_exactly_the_good_rows_in_order_and_counts_reasons(tmp_path):
    p = _write(tmp_path / "d.jsonl", 12, "r", BAD)
    cfg = _cfg(p, on_error="skip", max_skipped=3)
    examples, report = load_examples(cfg.datasets[0], cfg)
    good = [f"r-{i}" for i in range(12) if i + 1 not in BAD]
    assert _ids(examples) == good
    assert [ex.line for ex in examples] == [i + 1 for i in range(12) if i + 1 not in BAD]
    assert (report.rows, report.skipped) == (12, 3)
    assert report.reasons == {"invalid JSON: Expecting property name enclosed in double quotes": 1,
                              "output: missing": 1, "output: expected a string, got a number": 1}
    assert report.where["output: missing"] == [f"{p}:5"]
    assert report.lines()[0] == f"{p}: skipped 3 of 12 rows (data.on_error: skip)"


def test_skip_cap_as_count_and_fraction(tmp_path):
    p = _write(tmp_path / "d.jsonl", 12, "r", BAD)
    for cap in (2, 0.2):  # 3 bad rows: more than 2, and more than 0.2 * 12 = 2.4
        cfg = _cfg(p, on_error="skip", max_skipped=cap)
        with pytest.raises(DataError, match=r"3 of 12 rows are bad, more than data.max_skipped allows") as info:
            load_examples(cfg.datasets[0], cfg)
        assert info.value.file == p and f"first: {p}:2: invalid JSON" in info.value.reason
    cfg = _cfg(p, on_error="skip", max_skipped=0.25)  # 3 <= 0.25 * 12
    assert len(load_examples(cfg.datasets[0], cfg)[0]) == 9


def test_grouping_ignores_turn_index(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": r, "content": "a"}]}
            for r in ("bot", "assistant", "bot")]
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    cfg = DataConfig(datasets=[DataSource(path=str(p), format="messages")], on_error="skip", max_skipped=5)
    examples, report = load_examples(cfg.datasets[0], cfg)
    assert [ex.line for ex in examples] == [2]
    assert report.reasons == {"messages[*].role: unknown role 'bot'": 2}


def test_unknown_format_is_a_config_error_even_under_skip(tmp_path):
    src = DataSource.model_construct(**{**DataSource(path=_write(tmp_path / "d.jsonl", 2, "r")).model_dump(),
                                        "format": "alpacca"})  # past the config's own check
    cfg = DataConfig(datasets=[DataSource(path=src.path)], on_error="skip")
    with pytest.raises(ConfigError, match="did you mean \"alpaca\""):
        load_examples(src, cfg)


# ---------------------------------------------------------------- splits

def test_val_set_size_count_seeded_and_disjoint(tmp_path):
    a, b = _write(tmp_path / "a.jsonl", 20, "a"), _write(tmp_path / "b.jsonl", 10, "b")
    cfg = _cfg(a, b, val_set_size=6)
    train, eval_, report = build_splits(cfg, seed=1)
    assert len(eval_) == 6 and len(train) == 24
    assert not set(_ids(eval_)) & set(_ids(train))
    assert sorted(_ids(train) + _ids(eval_)) == sorted([f"a-{i}" for i in range(20)] + [f"b-{i}" for i in range(10)])
    again = build_splits(cfg, seed=1)
    assert (_ids(again[0]), _ids(again[1])) == (_ids(train), _ids(eval_))
    assert _ids(build_splits(cfg, seed=2)[1]) != _ids(eval_)
    assert sum(s.held_out for s in report.sources) == 6 and report.eval == 6


@pytest.mark.parametrize("size, expected", [(0.1, 3), (0.01, 1), (0.5, 15)])
def test_val_set_size_fraction_rounds_with_at_least_one(tmp_path, size, expected):
    cfg = _cfg(_write(tmp_path / "a.jsonl", 30, "a"), val_set_size=size)
    train, eval_, _ = build_splits(cfg, seed=0)
    assert (len(eval_), len(train)) == (expected, 30 - expected)


def test_held_out_rows_never_repeat_into_training(tmp_path):
    cfg = _cfg(_write(tmp_path / "a.jsonl", 10, "a"), weights=[3.0], val_set_size=0.3)
    train, eval_, report = build_splits(cfg, seed=5)
    assert len(eval_) == 3 and len(train) == 21
    assert not set(_ids(eval_)) & set(_ids(train))
    assert report.eval_in_train == 0


def test_val_set_size_must_leave_training_rows(tmp_path):
    cfg = _cfg(_write(tmp_path / "a.jsonl", 4, "a"), val_set_size=4)
    with pytest.raises(DataError, match="holding out 4 rows leaves none of the 4 training rows"):
        build_splits(cfg, seed=0)
    with pytest.raises(ConfigError, match="neither a whole count"):
        build_splits(_cfg(_write(tmp_path / "b.jsonl", 4, "b"), val_set_size=2.5), seed=0)


def test_training_size_keeps_the_first_rows_per_source(tmp_path):
    cfg = _cfg(_write(tmp_path / "a.jsonl", 8, "a"), _write(tmp_path / "b.jsonl", 8, "b"), training_size=3)
    train, _, report = build_splits(cfg, seed=0)
    assert _ids(train) == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
    assert [s.cut for s in report.sources] == [5, 5]


def test_training_sample_random_samples_after_the_validation_split(tmp_path):
    a, b = _write(tmp_path / "a.jsonl", 20, "a"), _write(tmp_path / "b.jsonl", 20, "b")
    cfg = _cfg(a, b, training_size=5, training_sample="random", val_set_size=6)
    train, eval_, report = build_splits(cfg, seed=0)
    ids, held = _ids(train), set(_ids(eval_))
    assert len(ids) == 10 and len(held) == 6 and not held & set(ids)
    assert ids != ["a-0", "a-1", "a-2", "a-3", "a-4", "b-0", "b-1", "b-2", "b-3", "b-4"]
    for tag in "ab":  # five per source, in file order
        mine = [int(x[2:]) for x in ids if x.startswith(tag)]
        assert len(mine) == 5 and mine == sorted(mine)
    # the held-out rows come from all 40 rows, not only from the first five of each source
    assert any(int(x[2:]) >= 5 for x in held)
    assert [s.held_out + s.cut + s.used for s in report.sources] == [20, 20]
    assert _ids(build_splits(cfg, seed=0)[0]) == ids and _ids(build_splits(cfg, seed=1)[0]) != ids
    first, _, _ = build_splits(_cfg(a, b, training_size=5, val_set_size=6), seed=0)  # `first`: as before
    assert len(first) + 6 == 10


def test_eval_datasets_replace_the_held_out_split(tmp_path):
    cfg = DataConfig(datasets=[DataSource(path=_write(tmp_path / "a.jsonl", 5, "a"))],
                     eval_datasets=[DataSource(path=_write(tmp_path / "t.jsonl", 2, "t"))])
    train, eval_, report = build_splits(cfg, seed=0)
    assert _ids(eval_) == ["t-0", "t-1"] and len(train) == 5
    assert [(s.part, s.used) for s in report.sources] == [("train", 5), ("eval", 2)]


def test_no_eval_without_config(tmp_path):
    train, eval_, _ = build_splits(_cfg(_write(tmp_path / "a.jsonl", 5, "a")), seed=0)
    assert len(train) == 5 and eval_ == []


# ---------------------------------------------------------------- weights

def test_weights_repeat_and_sample_deterministically(tmp_path):
    a, b, c = (_write(tmp_path / f"{t}.jsonl", 10, t) for t in "abc")
    cfg = _cfg(a, b, c, weights=[2.0, 0.5, 1.5])
    train, _, report = build_splits(cfg, seed=3)
    ids = _ids(train)
    assert ids[:20] == [f"a-{i}" for i in range(10)] * 2
    half = ids[20:25]
    assert len(half) == 5 and len(set(half)) == 5 and all(x.startswith("b-") for x in half)
    assert half == sorted(half, key=lambda x: int(x[2:]))  # the sample keeps file order
    assert ids[25:35] == [f"c-{i}" for i in range(10)]
    assert len(ids) == 40 and len(set(ids[35:])) == 5 and all(x.startswith("c-") for x in ids[35:])
    assert [s.used for s in report.sources] == [20, 5, 15]
    assert _ids(build_splits(cfg, seed=3)[0]) == ids
    assert _ids(build_splits(cfg, seed=4)[0]) != ids


def test_empty_training_set_names_the_sources(tmp_path):
    p = _write(tmp_path / "a.jsonl", 3, "a", {1: "{", 2: "{", 3: "{"})
    cfg = _cfg(p, on_error="skip", max_skipped=3)
    with pytest.raises(DataError) as info:
        build_splits(cfg, seed=0)
    assert info.value.file == p and "no training rows left" in info.value.reason
    assert f"{p}: read 3, skipped 3, held out 0, weight 1" in info.value.reason


def test_report_lines(tmp_path):
    p = _write(tmp_path / "a.jsonl", 12, "a", BAD)
    cfg = _cfg(p, weights=[2.0], val_set_size=2, on_error="skip", max_skipped=3)
    train, eval_, report = build_splits(cfg, seed=0)
    lines = report.lines()
    assert lines[0] == f"train  {p}  read 12  skipped 3  cut 0  held out 2  weight 2  -> 14"
    assert f"{p}: skipped 3 of 12 rows (data.on_error: skip)" in lines
    assert lines[-1] == "train 14 rows, eval 2 rows (held out by data.val_set_size=2, seed 0)"


def test_duplicates_between_eval_and_train_are_counted(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join([json.dumps({"instruction": "same", "output": "x"})] * 4), encoding="utf-8")
    _, _, report = build_splits(_cfg(str(p), val_set_size=1), seed=0)
    assert report.eval_in_train == 1
    assert report.lines()[-1].startswith("note: 1 eval rows have identical copies in train")
