"""Reading rows from every source type, with line numbers and file:line errors."""

from __future__ import annotations

import json

import pytest

from tunewright.config import DataSource
from tunewright.data.sources import read_rows
from tunewright.errors import DataError

ROWS = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]


def _src(path, **kw) -> DataSource:
    return DataSource(path=str(path), **kw)


def _error(src: DataSource) -> DataError:
    with pytest.raises(DataError) as info:
        read_rows(src)
    return info.value


# ---------------------------------------------------------------- jsonl

def test_jsonl_lines_are_file_lines_and_blank_lines_skipped(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n\n  \n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    assert read_rows(_src(p)) == [(1, ROWS[0]), (4, ROWS[1])]


def test_jsonl_bad_line_raises_with_line_and_json_message(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ROWS[0]) + '\n{"instruction": "x",\n', encoding="utf-8")
    err = _error(_src(p))
    assert (err.file, err.line) == (str(p), 2)
    assert str(err).startswith(f"{p}:2: invalid JSON: Expecting property name enclosed in double quotes")


def test_jsonl_bad_lines_collected_when_asked(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"a": 1}\nnot json\n[1, 2]\n{"a": "\xff"}\n{"a": 5}\n')
    errors: list[DataError] = []
    rows = read_rows(_src(p), errors)
    assert rows == [(1, {"a": 1}), (5, {"a": 5})]
    assert [(e.line, e.reason.split(" (")[0]) for e in errors] == [
        (2, "invalid JSON: Expecting value"),
        (3, "expected a JSON object, got a list"),
        (4, "not valid UTF-8"),
    ]


def test_jsonl_bom_and_crlf_are_accepted(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS[0]).encode() + b"\r\n" + json.dumps(ROWS[1]).encode() + b"\r\n")
    assert read_rows(_src(p)) == [(1, ROWS[0]), (2, ROWS[1])]


# ---------------------------------------------------------------- json

def test_json_list_rows_know_their_start_line(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    # indent=2: "[" on line 1, each object spans 4 lines
    assert read_rows(_src(p)) == [(2, ROWS[0]), (6, ROWS[1])]


def test_json_item_not_an_object_is_a_row_error(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n{"a": 1},\n"oops",\n{"a": 2}\n]', encoding="utf-8")
    assert str(_error(_src(p))) == f"{p}:3: expected a JSON object, got a string"
    errors: list[DataError] = []
    assert read_rows(_src(p), errors) == [(2, {"a": 1}), (4, {"a": 2})]
    assert [e.line for e in errors] == [3]


def test_json_syntax_error_has_line(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n{"a": 1},\n{"a": 2,}\n]', encoding="utf-8")
    err = _error(_src(p))
    assert err.line == 3 and "invalid JSON" in err.reason


def test_json_top_level_object_explains(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    assert "expected a top-level list of objects, got an object; the rows may be under key 'data'" in str(_error(_src(p)))


def test_json_file_holding_json_lines_is_read_as_jsonl(tmp_path):
    p = tmp_path / "d.json"
    p.write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    assert read_rows(_src(p)) == [(1, ROWS[0]), (2, ROWS[1])]


def test_invalid_utf8_in_json_names_the_line(tmp_path):
    p = tmp_path / "d.json"
    p.write_bytes(b'[\n{"a": 1},\n{"a": "\xc3\x28"}\n]')
    err = _error(_src(p))
    assert err.line == 3 and err.reason.startswith("not valid UTF-8 (byte 0xc3")


# ---------------------------------------------------------------- csv

def test_csv_rows_are_file_lines_with_header_on_line_1(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('instruction,output\na,b\n"multi\nline",d\n\ne,f\n', encoding="utf-8")
    assert read_rows(_src(p)) == [
        (2, {"instruction": "a", "output": "b"}),
        (3, {"instruction": "multi\nline", "output": "d"}),
        (6, {"instruction": "e", "output": "f"}),
    ]


def test_csv_wrong_field_count_is_a_row_error(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("instruction,output\na,b\nc,d,extra\ne,f\n", encoding="utf-8")
    assert str(_error(_src(p))) == f"{p}:3: row has 3 fields, the header has 2"
    errors: list[DataError] = []
    assert [line for line, _ in read_rows(_src(p), errors)] == [2, 4]
    assert len(errors) == 1


def test_csv_duplicate_header_and_excel_bom(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,a\n1,2,3\n", encoding="utf-8")
    assert str(_error(_src(p))) == f"{p}:1: a: column name appears twice in the header"
    p.write_bytes(b"\xef\xbb\xbfinstruction,output\nx,y\n")
    assert read_rows(_src(p)) == [(2, {"instruction": "x", "output": "y"})]


def test_csv_header_only_holds_no_rows(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("instruction,output\n", encoding="utf-8")
    assert _error(_src(p)).reason == "file holds no rows"


# ---------------------------------------------------------------- parquet and saved datasets

def test_parquet_rows_numbered_from_1(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), p)
    assert read_rows(_src(p)) == [(1, ROWS[0]), (2, ROWS[1])]


def test_not_really_parquet(tmp_path):
    p = tmp_path / "d.parquet"
    p.write_text("hello", encoding="utf-8")
    assert _error(_src(p)).reason.startswith("not a readable parquet file")


def test_saved_dataset_folder(tmp_path):
    from datasets import Dataset

    Dataset.from_list(ROWS).save_to_disk(tmp_path / "ds")
    assert read_rows(_src(tmp_path / "ds")) == [(1, ROWS[0]), (2, ROWS[1])]
    err = _error(_src(tmp_path / "ds", split="test"))
    assert err.field == "split" and "single dataset without splits" in err.reason


def test_saved_dataset_dict_picks_split_and_lists_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(ROWS), "validation": Dataset.from_list(ROWS[:1])}).save_to_disk(tmp_path / "dd")
    assert read_rows(_src(tmp_path / "dd", split="validation")) == [(1, ROWS[0])]
    err = _error(_src(tmp_path / "dd", split="valid"))
    assert str(err) == (f"{tmp_path / 'dd'}: split: no split 'valid' (did you mean \"validation\"?); "
                        "splits: train, validation")


def test_plain_folder_is_not_a_dataset(tmp_path):
    (tmp_path / "folder").mkdir()
    assert "not one written by `datasets` save_to_disk" in _error(_src(tmp_path / "folder")).reason


# ---------------------------------------------------------------- whole-file errors

def test_missing_file_suggests_a_close_name(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"a": 1}\n', encoding="utf-8")
    err = _error(_src(tmp_path / "trian.jsonl"))
    assert str(err) == f'{tmp_path / "trian.jsonl"}: no such file or folder (did you mean "{tmp_path / "train.jsonl"}"?)'
    assert f'did you mean "{tmp_path / "train.jsonl"}"' in _error(_src(tmp_path / "train.json")).reason
    assert _error(_src(tmp_path / "other.jsonl")).reason == "no such file or folder"


def test_empty_file(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n  \n", encoding="utf-8")
    assert str(_error(_src(p))) == f"{p}: file is empty"


def test_unknown_extension_and_explicit_file_type(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text(json.dumps(ROWS[0]) + "\n", encoding="utf-8")
    err = _error(_src(p))
    assert err.field == "file_type" and "unknown file extension '.txt'" in err.reason
    assert read_rows(_src(p, file_type="jsonl")) == [(1, ROWS[0])]


def test_unknown_hub_dataset_offline_is_a_clear_error():
    err = _error(_src("no-such-org-tw/no-such-dataset"))
    assert err.file == "no-such-org-tw/no-such-dataset" and err.line is None
    assert "cannot load it as a hub dataset (offline" in err.reason
