"""The mutation list of tools/mutate.py stays applicable: a mutant whose text moved would be
reported as an error at the next mutation run; here it fails at once, in the suite."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from mutate import occurrences  # noqa: E402
from mutants import MUTANTS  # noqa: E402


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_each_mutant_applies_once_and_names_existing_tests(mutant):
    assert occurrences(mutant) == 1, f"{mutant.file}: the `old` text of {mutant.id} must occur exactly once"
    assert mutant.new != mutant.old and mutant.file.startswith("src/")
    for test in mutant.tests:
        assert (ROOT / test.split("::")[0]).is_file(), test


def test_ids_are_unique_and_every_row_of_the_audit_is_listed():
    assert len({m.id for m in MUTANTS}) == len(MUTANTS)
    assert {m.row for m in MUTANTS if m.row} == set(range(1, 9))
    assert sum(m.row is None for m in MUTANTS) >= 14  # the ones the audit saw caught stay in the list
