"""`tunewright data self-instruct`: prompts from the pool, the model's text parsed into tasks, the
filters' counts printed, alpaca rows with provenance written; a deterministic generator stands in
for the model, and the whole command runs once on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewright.data.self_instruct import build_prompt, parse_task, read_seed_tasks, self_instruct, write_results
from tunewright.errors import ConfigError, DataError

SEEDS = Path(__file__).resolve().parents[2] / "recipes" / "data" / "self_instruct_seeds.jsonl"


def test_the_bundled_seed_tasks_read_as_alpaca():
    tasks = read_seed_tasks(SEEDS)
    assert len(tasks) == 20 and all(t["instruction"] and t["output"] for t in tasks)
    assert sum(bool(t["input"]) for t in tasks) >= 5  # some with an input, as in the paper's seeds


def test_a_seed_file_with_a_bad_row_is_named_by_line(tmp_path):
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"instruction": "a b c d", "output": "x"}\n{"instruction": "e f g h"}\n')
    with pytest.raises(DataError, match=r"s.jsonl:2: output: missing"):
        read_seed_tasks(bad)


def test_prompt_numbers_the_shown_tasks_and_opens_the_next():
    prompt = build_prompt([{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
                           {"instruction": "Reverse it.", "input": "abc", "output": "cba"}])
    assert "Task 1\nInstruction: Add 2 and 3.\nInput: <noinput>\nOutput: 5\n\n" in prompt
    assert "Task 2\nInstruction: Reverse it.\nInput: abc\nOutput: cba\n\n" in prompt
    assert prompt.endswith("Task 3\nInstruction:")


@pytest.mark.parametrize("text, fields", [
    (" Name a fruit.\nInput: <noinput>\nOutput: Apple.\n\nTask 9\nInstruction: more", ("Name a fruit.", "", "Apple.")),
    (" Fix the typo.\nInput: teh cat\nOutput: the cat", ("Fix the typo.", "teh cat", "the cat")),
    (" Just an instruction with no fields", ("Just an instruction with no fields", "", "")),
    ("", ("", "", "")),
    (" Two lines\nof instruction.\nOutput: A\nB", ("Two lines\nof instruction.", "", "A\nB")),
])
def test_parse_task(text, fields):
    c = parse_task(text)
    assert (c.instruction, c.input, c.output) == fields


COMPLETIONS = [  # round 1 (4 prompts), round 2 (2 prompts)
    " Write a limerick about a cat who loves rain.\nInput: <noinput>\nOutput: There once was a cat...",
    " Give three tips for keeping a houseplant alive.\nInput:\nOutput: Water it.",  # a seed: duplicate
    " Draw a picture of a sunset over the hills.\nOutput: ...",  # unsuitable
    " Sum up.\nOutput: x",  # too short
    " Write a limerick about a dog who loves rain.\nOutput: A dog...",  # like the first kept one
    " Convert the list of prices from euros to dollars.\nInput: 3 euros, 5 euros\nOutput: 3.24, 5.40 dollars",
]


def test_a_deterministic_generator_gives_the_expected_rows_counts_and_provenance(tmp_path):
    prompts_seen = []

    def propose(prompts, round_):
        prompts_seen.append(prompts)
        start = 0 if round_ == 0 else 4
        return COMPLETIONS[start:start + len(prompts)]

    lines = []
    result = self_instruct(read_seed_tasks(SEEDS), propose, proposals=6, shots=3, batch_size=4, seed=1,
                           model_name="fake", echo=lines.append)
    assert [len(p) for p in prompts_seen] == [4, 2]
    assert [r["instruction"] for r in result.kept] == ["Write a limerick about a cat who loves rain.",
                                                       "Convert the list of prices from euros to dollars."]
    assert {r["reason"] for r in result.dropped} == {"duplicate", "unsuitable", "too_short", "similar"}
    assert result.counts["similar"] == 1 and sum(result.counts.values()) == 4
    first = result.kept[0]["provenance"]
    assert first["generator"] == "self-instruct" and first["model"] == "fake" and first["round"] == 0
    assert len(first["prompt_tasks"]) == 3 and all(t.startswith("seed:") for t in first["prompt_tasks"])
    assert 0 < first["rouge_l"] < 0.7 and first["nearest"]
    # round 2 shows the task kept in round 1 (up to two generated tasks per prompt)
    assert all("Write a limerick about a cat who loves rain." in p for p in prompts_seen[1])
    assert "generated:1" in result.kept[1]["provenance"]["prompt_tasks"]
    assert result.summary() == ("self-instruct: 6 proposed, 2 kept, 4 dropped (empty 0, too_short 1, too_long 0, "
                                "unsuitable 1, duplicate 1, similar 1, no_output 0); pool: 20 seed + 2 new instructions")
    assert lines == ["round 1: 4 proposed, 1 kept", "round 2: 6 proposed, 2 kept"]

    out, rejected = write_results(result, tmp_path / "new.jsonl")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [set(r) for r in rows] == [{"instruction", "input", "output", "provenance"}] * 2
    assert rows[1]["input"] == "3 euros, 5 euros"
    assert len(rejected.read_text().splitlines()) == 4 and rejected.name == "new.dropped.jsonl"
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        write_results(result, tmp_path / "new.jsonl")
    # the kept rows train as alpaca rows: the provenance column is carried along, not read
    from tunewright.config import DataSource
    from tunewright.data.formats import format_row
    assert format_row(rows[1], 2, DataSource(path=str(out))).messages[0].context == "3 euros, 5 euros"


def test_the_command_runs_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    from tunewright.cli import main

    out = tmp_path / "grown.jsonl"
    argv = ["data", "self-instruct", "--seeds", str(SEEDS), "--out", str(out), "--model", tiny_model_dir("llama"),
            "--proposals", "3", "--batch-size", "3", "--max-new-tokens", "6", "--shots", "2"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    summary = next(line for line in text.splitlines() if line.startswith("self-instruct: 3 proposed"))
    kept = len(out.read_text().splitlines())
    dropped = len((tmp_path / "grown.dropped.jsonl").read_text().splitlines())
    assert kept + dropped == 3 and f", {kept} kept, {dropped} dropped (" in summary
    assert main(argv) == 2  # the output exists: refused before the model loads
    assert "exists; pass --overwrite" in capsys.readouterr().err
