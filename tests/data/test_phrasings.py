"""Phrasings per source and few-shot examples (FLAN style): valid templates, a uniform and
reproducible seeded choice, examples only from the same source's training rows, never the row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from tunewright.config import DataConfig, DataSource, load_config
from tunewright.data.mixture import build_splits
from tunewright.data.phrasings import apply_template, builtin_sets, check_template, phrase_rows
from tunewright.data.types import Example, Message
from tunewright.errors import ConfigError

INSTRUCT_TASKS = ("world_qa", "arithmetic", "string_skills", "dialogue_summary", "extraction")
TEN = [f"T{i}: {{instruction}}" for i in range(10)]


def _write(path, n: int, tag: str, input_text: str = "") -> str:
    rows = [{"instruction": f"{tag} question {i}", "input": input_text, "output": f"{tag} answer {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _rows(n: int, source: str = "d.jsonl") -> list[Example]:
    return [Example(source, i + 1, messages=[Message("user", f"q{i}", context=f"in{i}"), Message("assistant", f"a{i}")])
            for i in range(n)]


def _drawn(examples) -> list[int]:
    return [ex.meta["phrasing"] for ex in examples]


# ---------------------------------------------------------------- templates

@pytest.mark.parametrize("task", INSTRUCT_TASKS)
def test_every_lab_instruction_task_has_ten_distinct_valid_phrasings(task):
    templates = builtin_sets()[task]
    assert len(templates) == len(set(templates)) == 10
    assert all(check_template(t) is None for t in templates)


@pytest.mark.parametrize("text, reason", [
    ("Say {output}", "unknown placeholder {output}"),
    ("{instruction!r}", "unknown placeholder {instruction!r}"),
    ("a { b", "expected '}' before end of string (write a literal brace as {{ or }})"),
    ("No placeholder at all", "names neither {instruction} nor {input}"),
])
def test_bad_templates_say_why(text, reason):
    assert reason in check_template(text)


def test_a_template_places_the_input_or_leaves_it_as_context():
    turn = Message("user", "Reverse the word.", context="kolat")
    placed = apply_template('Word: {input}\n\n{instruction} Use {{braces}}.', turn)
    assert (placed.content, placed.context) == ("Word: kolat\n\nReverse the word. Use {braces}.", None)
    kept = apply_template("Please: {instruction}", turn)
    assert (kept.content, kept.context) == ("Please: Reverse the word.", "kolat")


def test_config_names_a_built_in_set_or_refuses_with_a_suggestion(tmp_path):
    base = {"data": {"datasets": [{"path": "d.jsonl", "phrasings": "arithmetic"}]}}
    assert load_config(raw=base).data.datasets[0].phrasings == "arithmetic"
    with pytest.raises(ConfigError, match=r"data.datasets.0.phrasings: .*unknown phrasing set 'arithmetc' "
                                          r'\(did you mean "arithmetic"\?\)'):
        load_config(raw=base, overrides=["data.datasets.0.phrasings=arithmetc"])
    with pytest.raises(ConfigError, match=r"template 1: unknown placeholder \{answer\}"):
        load_config(raw={"data": {"datasets": [{"path": "d.jsonl", "phrasings": ["{instruction}", "{answer}"]}]}})
    with pytest.raises(ConfigError, match="format 'text' has none"):
        load_config(raw={"data": {"datasets": [{"path": "d.jsonl", "format": "text", "shots": [0, 2]}]}})


# ---------------------------------------------------------------- the seeded choice

def _uniformity_p(counts: list[int]) -> float:
    """Pearson's chi-square test against equal counts: P(chi2 with len-1 degrees of freedom >= X)."""
    from scipy.special import chdtrc  # the survival function alone (scipy.stats takes seconds to import)

    expected = sum(counts) / len(counts)
    return float(chdtrc(len(counts) - 1, sum((c - expected) ** 2 / expected for c in counts)))


def test_the_choice_over_1000_rows_passes_a_chi_square_test_of_uniformity():
    src = DataSource(path="d.jsonl", phrasings=TEN)
    counts = Counter(_drawn(phrase_rows(_rows(1000), [], src, seed=42)))
    assert set(counts) == set(range(1, 11))
    p = _uniformity_p([counts[i] for i in range(1, 11)])
    assert p > 0.01, (counts, p)
    # the test can tell: a draw favouring one template fails it
    assert _uniformity_p([190] + [90] * 9) < 0.01
    assert _uniformity_p([100] * 10) == 1.0


# a source as phrase_rows reads it, without importing the config schema (seconds) in the child
_CHILD = """
import json, types
from tunewright.data.phrasings import phrase_rows
from tunewright.data.types import Example, Message
rows = [Example("d.jsonl", i + 1, messages=[Message("user", f"q{i}"), Message("assistant", f"a{i}")]) for i in range(40)]
src = types.SimpleNamespace(path="d.jsonl", format="alpaca", phrasings=[f"T{i}: {{instruction}}" for i in range(10)],
                            shots=[0, 1])
print(json.dumps([[e.meta["phrasing"], e.meta["exemplars"]] for e in phrase_rows(rows, rows, src, seed=7)]))
"""


def test_the_choice_is_the_same_in_another_process_with_another_hash_seed():
    rows = [Example("d.jsonl", i + 1, messages=[Message("user", f"q{i}"), Message("assistant", f"a{i}")])
            for i in range(40)]
    src = DataSource(path="d.jsonl", phrasings=TEN, shots=[0, 1])
    here = [[e.meta["phrasing"], e.meta["exemplars"]] for e in phrase_rows(rows, rows, src, seed=7)]
    assert len({str(x) for x in here}) > 10  # varied choices, not one repeated
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == here


def test_the_choice_follows_the_seed_and_the_row_not_its_neighbours():
    src = DataSource(path="d.jsonl", phrasings=TEN)
    rows = _rows(50)
    first = _drawn(phrase_rows(rows, [], src, seed=1))
    assert first == _drawn(phrase_rows(rows, [], src, seed=1))
    assert first != _drawn(phrase_rows(rows, [], src, seed=2))
    assert _drawn(phrase_rows(rows[10:], [], src, seed=1)) == first[10:]  # rows removed elsewhere: no change


# ---------------------------------------------------------------- few-shot examples

def test_few_shot_examples_are_other_training_rows_of_the_same_source(tmp_path):
    a = _write(tmp_path / "a.jsonl", 30, "alpha")
    b = _write(tmp_path / "b.jsonl", 30, "beta")
    cfg = DataConfig(datasets=[DataSource(path=a, shots=[0, 2], phrasings=TEN), DataSource(path=b, shots=[3])],
                     val_set_size=10)
    train, evals, report = build_splits(cfg, seed=0)
    train_lines = {(ex.source, ex.line) for ex in train}
    by_content = {(ex.source, ex.line): ex for ex in train}
    shots = Counter()
    for ex in train + evals:
        k = ex.meta["shots"]
        shots[(ex.source, k)] += 1
        assert ex.line not in ex.meta["exemplars"]
        tag = "alpha" if ex.source == a else "beta"
        users = [m for m in ex.messages if m.role == "user"]
        replies = [m for m in ex.messages if m.role == "assistant"]
        assert len(users) == len(replies) == k + 1
        assert all(tag in m.content for m in ex.messages)  # examples from the row's own source
        assert [m.train for m in replies] == [False] * k + [None]  # only the row's own reply trains
        for line in ex.meta["exemplars"]:
            assert (ex.source, line) in train_lines  # a training row, never a held-out one
            shown = by_content[(ex.source, line)]
            assert shown.messages[-1].content in [m.content for m in replies[:-1]]
    assert {k for (src, k) in shots if src == a} == {0, 2} and {k for (src, k) in shots if src == b} == {3}
    assert len(evals) == 10 and all(ex.meta.get("phrasing") for ex in evals if ex.source == a)
    assert any(line.startswith("phrased ") and "10 phrasings" in line for line in report.lines())


def test_copies_of_a_row_are_never_its_examples():
    rows = _rows(3) + [Example("d.jsonl", 10 + i, messages=[Message("user", "q0", context="in0"),
                                                             Message("assistant", "a0")]) for i in range(6)]
    src = DataSource(path="d.jsonl", shots=[2])
    for ex in phrase_rows(rows, rows, src, seed=0):
        row_reply = ex.messages[-1].content
        assert row_reply not in [m.content for m in ex.messages[:-1]]
        assert ex.meta["shots"] == 2  # 7 copies of one row leave two other rows to show


def test_examples_are_phrased_like_the_row_and_follow_a_system_turn():
    rows = [Example("d.jsonl", i + 1, messages=[Message("system", "Be brief."), Message("user", f"q{i}"),
                                                 Message("assistant", f"a{i}")]) for i in range(5)]
    src = DataSource(path="d.jsonl", shots=[2], phrasings=["Q: {instruction}"])
    ex = phrase_rows(rows, rows, src, seed=3)[0]
    assert [m.role for m in ex.messages] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert all(m.content.startswith("Q: q") for m in ex.messages if m.role == "user")
    assert rows[0].messages[1].content == "q0"  # the input rows are left as they were
