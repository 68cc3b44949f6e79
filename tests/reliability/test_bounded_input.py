"""Bounded input (issue 11, rows 11 and 13): hostile or absurd input ends in one line naming the key,
option or file and the reason, in well under a second: YAML alias bombs and 10,000-deep nesting,
huge values (echoed truncated), numbers that overflow, names too long for the filesystem, zero new
tokens, impossible output folders, and special files (FIFO, character device, folder) given as data."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tunewright.cli import main
from tunewright.config import load_config
from tunewright.errors import ConfigError, TunewrightError

ROW = {"instruction": "Say hi.", "input": "", "output": "hi"}


def bomb(levels: int = 10) -> str:
    """YAML whose last alias expands to 9**levels strings: tiny on disk, billions of values in memory."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = [f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip(names, names[1:levels]):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines)


def flow_bomb(levels: int = 10) -> str:
    """The same bomb as one flow value, for an override or a `lab export` option."""
    names = "abcdefghijklmnopqrstuvwxyz"
    items = [f"&{names[0]} [x, x, x, x, x, x, x, x, x]"]
    items += [f"&{name} [" + ", ".join([f"*{prev}"] * 9) + "]" for prev, name in zip(names, names[1:levels])]
    return "[" + ", ".join(items) + "]"


def deep(levels: int = 10_000) -> str:
    return "[" * levels + "]" * levels


@pytest.fixture
def recipe(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    return tmp_path, f"model: {{name: tiny-llama}}\ndata: {{datasets: [{{path: {data}}}]}}\n"


def one_line_error(call, match: str, max_len: int = 400) -> str:
    """`call()` raises a TunewrightError of one line matching `match`, in under a second."""
    start = time.perf_counter()
    with pytest.raises(TunewrightError) as err:
        call()
    assert time.perf_counter() - start < 1.0
    text = str(err.value)
    assert "\n" not in text and len(text) < max_len, text
    assert match in text, text
    return text


def cli_error(capsys, argv: list[str], match: str, fast: bool = False) -> str:
    """`tunewright ARGV` exits 2 with one `error:` line matching `match` (in under a second if `fast`:
    commands that import torch on first use are not timed)."""
    start = time.perf_counter()
    assert main(argv) == 2
    assert not fast or time.perf_counter() - start < 1.0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err, err
    return err


# ---------------------------------------------------------------- YAML: aliases and depth (row 11)

@pytest.mark.parametrize("case", ["alias bomb", "deep nesting", "alias cycle", "deep through aliases"])
def test_hostile_yaml_in_a_run_config(recipe, case, tally):
    tmp, head = recipe
    body = {"alias bomb": f"{bomb()}\nmethod: {{target_modules: *j}}\n",
            "deep nesting": f"method: {{target_modules: {deep()}}}\n",
            "alias cycle": "loop: &l [*l]\nmethod: {target_modules: *l}\n",
            "deep through aliases": "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 500))
                                    + "method: {target_modules: *a499}\n"}[case]
    path = tmp / "hostile.yaml"
    path.write_text(head + body)
    text = one_line_error(lambda: load_config(path), "invalid YAML")
    assert text.startswith(f"{path}:")
    tally("bounded inputs")


@pytest.mark.parametrize("case", ["alias bomb", "deep nesting"])
def test_hostile_yaml_in_an_eval_config(tmp_path, case, tally):
    from tunewright.eval.config import load_eval_config

    body = {"alias bomb": f"{bomb()}\ncandidates: *j\n", "deep nesting": f"candidates: {deep()}\n"}[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(f"data: {{path: d.jsonl}}\n{body}")
    one_line_error(lambda: load_eval_config(path), "invalid YAML")
    tally("bounded inputs")


@pytest.mark.parametrize("value", [flow_bomb(), deep()], ids=["alias bomb", "deep nesting"])
def test_hostile_yaml_in_an_override_and_a_lab_option(recipe, capsys, value, tally):
    tmp, head = recipe
    path = tmp / "r.yaml"
    path.write_text(head)
    one_line_error(lambda: load_config(path, [f"method.target_modules={value}"]), "override method.target_modules")
    cli_error(capsys, ["lab", "export", "--task", "extraction", "--out", str(tmp / "lab"), f"n_train={value}"],
              "n_train", fast=True)
    assert not (tmp / "lab").exists()
    tally("bounded inputs", 2)


def test_a_yaml_syntax_error_in_a_lab_option_is_one_line(tmp_path, capsys, tally):
    cli_error(capsys, ["lab", "export", "--task", "extraction", "--out", str(tmp_path / "lab"), "n_train=[1"],
              "n_train")
    tally("bounded inputs")


def test_ordinary_aliases_still_load(recipe):
    tmp, head = recipe
    path = tmp / "aliases.yaml"
    path.write_text(head + "modules: &m [q_proj, v_proj]\nmethod: {target_modules: *m}\n"
                    "base: &base {r: 4}\n")
    with pytest.raises(ConfigError, match="modules: unknown key"):  # aliases resolve; the extra keys are refused
        load_config(path)
    path.write_text(head + "method: {target_modules: [q_proj, v_proj], r: 4}\n")
    assert load_config(path).method.target_modules == ["q_proj", "v_proj"]


# ---------------------------------------------------------------- long values are echoed short

@pytest.mark.parametrize("override", ["model.dtype=", "method.target_modules=", "output.name=", "data.datasets.0.format="])
def test_a_huge_value_is_echoed_truncated(recipe, override, tally):
    tmp, head = recipe
    path = tmp / "r.yaml"
    path.write_text(head)
    huge = "z" * 100_000
    text = one_line_error(lambda: load_config(path, [override + huge]), override.rstrip("="))
    assert "zzzzz" in text and "..." in text
    tally("bounded inputs")


def test_a_long_list_of_bad_items_is_a_short_message(recipe, tally):
    tmp, head = recipe
    path = tmp / "r.yaml"
    path.write_text(head.replace("data: {datasets: [", "data: {datasets: [" + "1, " * 2_000))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 21 and lines[-1].endswith("... and 1,980 more errors")
    tally("bounded inputs")


# ---------------------------------------------------------------- numbers and names (row 13)

@pytest.mark.parametrize("value", ["1e308", ".inf", "1e7"])
def test_an_absurd_epoch_count_is_refused(recipe, value, tally):
    tmp, head = recipe
    path = tmp / "r.yaml"
    path.write_text(head)
    one_line_error(lambda: load_config(path, [f"train.num_epochs={value}"]), "train.num_epochs")
    assert load_config(path, ["train.num_epochs=1000"]).train.num_epochs == 1000
    tally("bounded inputs")


def test_a_run_name_too_long_for_the_filesystem_is_refused(recipe, tally):
    tmp, head = recipe
    path = tmp / "r.yaml"
    path.write_text(head)
    one_line_error(lambda: load_config(path, ["output.name=" + "n" * 300]), "output.name")
    one_line_error(lambda: load_config(path, ["output.name=" + "é" * 128]), "255 bytes")  # 256 bytes in UTF-8
    one_line_error(lambda: load_config(path, [f"output.dir={tmp}/{'d' * 300}"]), "output.dir")
    assert load_config(path, ["output.name=" + "n" * 255]).output.name == "n" * 255
    tally("bounded inputs")


@pytest.mark.parametrize("command", ["generate", "chat"])
@pytest.mark.parametrize("n", ["0", "-1"])
def test_zero_new_tokens_is_refused(tmp_path, capsys, command, n, tally):
    argv = [command, str(tmp_path), "--max-new-tokens", n] + (["--prompt", "hi"] if command == "generate" else [])
    cli_error(capsys, argv, "--max-new-tokens")
    tally("bounded inputs")


@pytest.mark.parametrize("option, value", [("--temperature", "0"), ("--temperature", "-1"), ("--top-p", "0"),
                                           ("--top-p", "1.5")])
def test_sampling_settings_out_of_range_are_refused(tmp_path, capsys, option, value, tally):
    cli_error(capsys, ["generate", str(tmp_path), "-p", "hi", "--sample", option, value], option)
    tally("bounded inputs")


# ---------------------------------------------------------------- output folders (row 13)

@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "a-file.txt"
    path.write_text("mine\n")
    return path


@pytest.fixture
def model_folder(tmp_path) -> str:
    """What merge takes for a model folder; the output checks come before anything loads it."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


def test_merge_out_that_cannot_be_a_new_folder(tmp_path, a_file, capsys, monkeypatch, model_folder, tally):
    model = model_folder
    cli_error(capsys, ["merge", model, "--out", str(a_file)], "is a file")
    cli_error(capsys, ["merge", model, "--out", str(a_file / "sub")], "not a folder")
    monkeypatch.chdir(tmp_path)
    cli_error(capsys, ["merge", model, "--out", "."], "working folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    cli_error(capsys, ["merge", model, "--out", "."], "working folder")
    assert a_file.read_text() == "mine\n" and not list(empty.iterdir())
    tally("bounded inputs", 4)


def test_merge_out_on_an_unwritable_path(tmp_path, capsys, model_folder, tally):
    probe = Path("/proc/tunewright-probe")  # writable by nobody, root included
    cli_error(capsys, ["merge", model_folder, "--out", str(probe / "merged")], "cannot create")
    assert not probe.exists()
    tally("bounded inputs")


def test_eval_out_that_is_a_file(tmp_path, a_file, capsys, tally):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    cli_error(capsys, ["eval", "--model", "never-loaded", "--data", str(data), "--out", str(a_file)], "is a file")
    assert a_file.read_text() == "mine\n"
    tally("bounded inputs")


# ---------------------------------------------------------------- special files as data (row 13)

@pytest.fixture
def specials(tmp_path) -> dict[str, tuple[Path, str]]:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    return {"fifo": (fifo, "is a FIFO"), "character device": (Path("/dev/zero"), "is a character device"),
            "folder": (folder, "a folder")}


@pytest.mark.parametrize("kind", ["fifo", "character device", "folder"])
def test_a_special_file_as_data_is_named_for_what_it_is(specials, kind, capsys, tmp_path, tally):
    from tunewright.config import DataSource
    from tunewright.data.sources import read_rows

    path, what = specials[kind]
    text = one_line_error(lambda: read_rows(DataSource(path=str(path))), what)
    assert "no such file" not in text
    tally("bounded inputs")


@pytest.mark.parametrize("kind", ["fifo", "character device", "folder"])
def test_a_special_file_as_prompts_file(specials, kind, capsys, tmp_path, tally):
    path, what = specials[kind]
    cli_error(capsys, ["generate", str(tmp_path), "--prompts-file", str(path)], what)
    tally("bounded inputs")


def test_a_data_path_with_a_name_too_long(tmp_path, tally):
    from tunewright.config import DataSource
    from tunewright.data.sources import read_rows

    path = f"{tmp_path}/{'x' * 300}/d.jsonl"
    one_line_error(lambda: read_rows(DataSource(path=path)), "too long", max_len=len(path) + 100)
    tally("bounded inputs")


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_special_file_as_a_config(specials, kind, capsys, tally):
    path, what = specials[kind]
    cli_error(capsys, ["validate", str(path)], "not a YAML file")
    cli_error(capsys, ["eval", str(path)], what)
    tally("bounded inputs", 2)


def test_lab_export_out_that_is_a_file(a_file, capsys, tally):
    cli_error(capsys, ["lab", "export", "--task", "arithmetic", "--out", str(a_file), "n_train=2"], "is a file")
    cli_error(capsys, ["lab", "export", "--task", "arithmetic", "--out", str(a_file / "sub"), "n_train=2"], "cannot")
    assert a_file.read_text() == "mine\n"
    tally("bounded inputs", 2)
