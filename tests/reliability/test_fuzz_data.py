"""Fuzzed data (issue 7, point 4; the classification and tabular classes: issue 16): >= 1,000 seeded malformed files, >= 50 of each class in
`fuzz_cases.CLASSES`, read in-process through `load_examples` / `build_splits`.

Under `on_error: raise` each ends in one `DataError` (or `ConfigError` for a bad `columns`/`roles`
mapping) whose one-line message names the file, the line and the field the generator broke. Under
`on_error: skip` the rows loaded are exactly the known-good rows, in order, and the bad ones are
counted; whole-file problems still raise. Nothing else may escape.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tunewright.config import DataConfig, DataSource
from tunewright.data.mixture import build_splits, load_examples
from tunewright.errors import ConfigError, DataError, TunewrightError

sys.path.insert(0, str(Path(__file__).parent))
from fuzz_cases import CLASSES, Case, all_cases, signature  # noqa: E402

PER_CLASS = 105
CASES = all_cases(PER_CLASS)
MIXED = [c for c in CASES if c.good is not None]


def _write(tmp_path: Path, case: Case) -> DataSource:
    path = tmp_path / case.name
    path.write_bytes(case.data)
    return DataSource(path=str(path), **case.source)


def _load(src: DataSource, **data) -> tuple:
    return load_examples(src, DataConfig(datasets=[src], **data))


def _check_error(case: Case, src: DataSource, err: Exception) -> list[str]:
    """What is wrong with `err` as the error of `case` (empty when right)."""
    msg = str(err)
    wrong = []
    if not isinstance(err, ConfigError if case.config_error else DataError):
        wrong.append(f"raised {type(err).__name__}")
    if "\n" in msg or len(msg) > 1000:
        wrong.append("message is not one short line")
    if not msg.startswith(src.path + (":" if case.line or case.config_error else "")):
        wrong.append("message does not start with the file")
    if isinstance(err, DataError) and not case.config_error:
        if err.line != case.line:
            wrong.append(f"line {err.line}, expected {case.line}")
        if err.field != case.field:
            wrong.append(f"field {err.field!r}, expected {case.field!r}")
        if case.line is not None and f"{src.path}:{case.line}: " not in msg:
            wrong.append("message lacks file:line")
        if case.field and f": {case.field}: " not in msg:
            wrong.append("message lacks the field")
    elif case.config_error and f": {case.field}: " not in msg:
        wrong.append("message lacks the mapping key")
    return wrong


def _run(cases, check) -> list[str]:
    failures = []
    for case in cases:
        try:
            problem = check(case)
        except Exception as err:  # noqa: BLE001 - the point is that nothing else escapes
            problem = f"raised {type(err).__name__}: {err}"[:300]
        if problem:
            failures.append(f"{case.name}: {problem}")
    return failures


def test_there_are_enough_cases_of_each_class(tally):
    per_class = {kind: sum(c.kind == kind for c in CASES) for kind in CLASSES}
    assert len(CASES) >= 1000 and min(per_class.values()) >= 50, per_class
    assert len(MIXED) >= 300  # enough files mixing good and bad rows for the skip-mode check
    tally("data fuzz cases", len(CASES))


@pytest.mark.parametrize("kind", list(CLASSES))
def test_raise_mode_names_the_file_line_and_field(kind, tmp_path):
    def check(case):
        src = _write(tmp_path, case)
        try:
            _load(src, on_error="raise")
        except TunewrightError as err:
            wrong = _check_error(case, src, err)
            return f"{'; '.join(wrong)} ({err})"[:400] if wrong else ""
        return "accepted"
    failures = _run([c for c in CASES if c.kind == kind], check)
    assert not failures, f"{len(failures)} bad:\n" + "\n".join(failures[:30])


@pytest.mark.parametrize("kind", list(CLASSES))
def test_skip_mode_loads_exactly_the_good_rows_and_counts_the_rest(kind, tmp_path):
    def check(case):
        src = _write(tmp_path, case)
        try:
            examples, report = _load(src, on_error="skip", max_skipped=10**9)
        except TunewrightError as err:
            if case.good is None or case.config_error:
                wrong = _check_error(case, src, err)  # whole-file problems are reported as under raise
                return f"{'; '.join(wrong)} ({err})"[:400] if wrong else ""
            return f"raised {err}"
        if case.good is None or case.config_error:
            return f"loaded {len(examples)} rows from a file that cannot be read"
        got = [signature(ex.messages, ex.segments, ex.responses, ex.label) for ex in examples]
        if got != case.good:
            return f"loaded {got!r:.200}, expected {case.good!r:.200}"
        if (report.skipped, report.rows) != (case.bad, case.rows):
            return f"counted {report.skipped} skipped of {report.rows}, expected {case.bad} of {case.rows}"
        return ""
    failures = _run([c for c in CASES if c.kind == kind], check)
    assert not failures, f"{len(failures)} bad:\n" + "\n".join(failures[:30])


def test_skip_mode_over_max_skipped_raises_with_the_count(tmp_path):
    def check(case):
        src = _write(tmp_path, case)
        try:
            _load(src, on_error="skip", max_skipped=0.01)  # every mixed file is over 1% bad
        except DataError as err:
            want = f"{case.bad} of {case.rows} rows are bad"
            return "" if str(err).startswith(src.path + ": ") and want in str(err) else f"message {err}"
        return "accepted"
    failures = _run(MIXED[::3], check)
    assert not failures, "\n".join(failures[:30])


def test_build_splits_trains_on_exactly_the_good_rows_of_every_source(tmp_path):
    clean = tmp_path / "clean.jsonl"
    clean.write_text('{"instruction": "clean q", "output": "clean a"}\n')
    clean_sig = (("user", "clean q", None), ("assistant", "clean a", None))

    def check(case):
        src = _write(tmp_path, case)
        cfg = DataConfig(datasets=[src, DataSource(path=str(clean))], on_error="skip", max_skipped=10**9)
        train, evals, report = build_splits(cfg, seed=3)
        got = [signature(ex.messages, ex.segments, ex.responses, ex.label) for ex in train]
        if got != case.good + [clean_sig] or evals:
            return f"trained on {got!r:.200}"
        if (report.sources[0].skipped, report.sources[0].read) != (case.bad, case.rows):
            return f"counted {report.sources[0].skipped} skipped of {report.sources[0].read}"
        return ""
    failures = _run(MIXED[::4], check)
    assert not failures, "\n".join(failures[:30])


def test_huge_good_rows_tokenize_truncated_and_counted(tiny_model_dir):
    from transformers import AutoTokenizer

    from tunewright.data.templates import NAMED, prepare_tokenizer
    from tunewright.data.tokenize import tokenize_examples
    from tunewright.data.types import Example, Message

    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llama"))
    template = NAMED["chatml"]
    prepare_tokenizer(tok, template)
    huge = "lorem ipsum " * 20_000  # 240 KB
    examples = [Example("huge.jsonl", i + 1, [Message("user", "q"), Message("assistant", huge if i % 2 else "a")])
                for i in range(4)]
    for truncation in ("truncate", "drop"):
        cfg = DataConfig(datasets=[DataSource(path="huge.jsonl")], cutoff_len=64, truncation=truncation)
        kept, stats = tokenize_examples(examples, tok, template, cfg)
        assert stats.rows_in == 4 and all(len(e.input_ids) <= 64 for e in kept)
        if truncation == "truncate":
            assert (stats.kept, stats.truncated) == (4, 2)
        else:
            assert stats.kept == 2 and sum(stats.dropped.values()) == 2
