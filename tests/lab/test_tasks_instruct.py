"""Instruction tasks: every answer is right, extraction is fixed-key JSON, held-out problems and words."""

from __future__ import annotations

import json
import re

import pytest

from tunewright.errors import ConfigError
from tunewright.lab.tasks_instruct import (EXTRACTION_KEYS, arithmetic, dialogue_summary, extraction, string_skills,
                                           world_qa)
from tunewright.lab.world import make_world

N = dict(n_train=300, n_val=30, n_test=60)


def _rows(splits):
    return [r for rows in splits.values() for r in rows]


def test_arithmetic_answers_are_correct_and_test_problems_are_new():
    splits = arithmetic(**N)
    problems = {}
    for split, rows in splits.items():
        problems[split] = set()
        for r in rows:
            a, op, b = re.fullmatch(r"(?:What is|Compute|Calculate) (\d+) (\+|-|×|plus|minus|times) (\d+)[?.]",
                                    r["instruction"]).groups()
            op = {"plus": "+", "minus": "-", "times": "*", "×": "*"}.get(op, op)
            assert int(r["output"]) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
            problems[split].add((int(a), op, int(b)))
    assert not problems["test"] & problems["train"]  # the same problem in other words counts as seen
    assert {p[1] for p in problems["train"]} == {"+", "-", "*"}


def test_arithmetic_options_are_checked():
    rows = _rows(arithmetic(n_train=50, n_val=5, n_test=5, ops="+", max_value=9))
    assert all("+" in r["instruction"] or "plus" in r["instruction"] for r in rows)
    assert all(0 <= int(r["output"]) <= 18 for r in rows)
    with pytest.raises(ConfigError, match="ops: expected some of"):
        arithmetic(ops="/")


def test_extraction_outputs_are_compact_json_with_fixed_keys_matching_the_world():
    world = make_world(0)
    for r in _rows(extraction(**N)):
        record = json.loads(r["output"])
        assert tuple(record) == EXTRACTION_KEYS
        assert r["output"] == json.dumps(record, separators=(",", ":"))  # compact, one line
        person = world.person(record["name"])
        assert record == {"name": person.name, "age": person.age, "city": person.city, "job": person.job}
        assert person.name in r["input"] and str(person.age) in r["input"] and person.city in r["input"]
    hinted = extraction(n_train=5, n_val=1, n_test=1, schema_hint=True)["train"][0]["instruction"]
    assert hinted.endswith("Use the keys name, age, city, job.")


def test_string_skill_answers_are_correct_and_test_words_are_new():
    check = {"Reverse the letters of the word.": lambda w: w[::-1],
             "Write the word in capital letters.": str.upper,
             "How many letters does the word have?": lambda w: str(len(w)),
             "What is the last letter of the word?": lambda w: w[-1],
             "Spell the word with hyphens between its letters.": "-".join,
             "Write the letters of the word in alphabetical order.": lambda w: "".join(sorted(w))}
    splits = string_skills(**N)
    for r in _rows(splits):
        counted = re.fullmatch(r'How many times does the letter "(\w)" appear in the word\?', r["instruction"])
        expected = str(r["input"].count(counted.group(1))) if counted else check[r["instruction"]](r["input"])
        assert r["output"] == expected
    words = {s: {r["input"] for r in rows} for s, rows in splits.items()}
    assert not words["test"] & words["train"]
    assert len({r["instruction"].split('"')[0] for r in splits["train"]}) == 7


def test_world_qa_answers_are_facts_stated_in_the_context():
    for r in _rows(world_qa(**N)):
        assert r["output"] in r["input"]
    closed = world_qa(n_train=20, n_val=2, n_test=2, context=False)
    assert all(r["input"] == "" for r in _rows(closed))


def test_world_qa_closed_book_answers_match_the_world():
    world = make_world(0)
    for r in _rows(world_qa(n_train=200, n_val=2, n_test=2, context=False)):
        m = re.fullmatch(r"How old is (.+)\?", r["instruction"])
        if m:
            assert r["output"] == str(world.person(m.group(1)).age)
        m = re.fullmatch(r"Who is the chief executive of (.+)\?", r["instruction"])
        if m:
            assert r["output"] == world.org(m.group(1)).ceo


def test_dialogue_summaries_name_the_speakers_and_follow_the_dialogue():
    for r in _rows(dialogue_summary(**N)):
        speakers = list(dict.fromkeys(line.split(":")[0] for line in r["input"].splitlines()))
        assert len(speakers) == 2 and all(s in r["output"] for s in speakers)
        assert r["output"].endswith(".") and "\n" not in r["output"]
        if " agree to meet " in r["output"]:  # the agreed day is the last day mentioned in the dialogue
            day = re.search(r" on (\w+day) ", r["output"]).group(1)
            assert re.findall(r"\w+day", r["input"])[-1] == day
        if " declines." in r["output"]:
            assert "can't" in r["input"] or "pass" in r["input"]
