"""The self-instruct filters: from a fixed candidate list, the kept set equals a brute-force
reference (public rouge-score, every pool instruction, no shortcuts), reason by reason, with the
ROUGE-L threshold pinned on both sides of 0.7."""

from __future__ import annotations

import re

import pytest
from rouge_score import rouge_scorer

from tunewright.data.instruction_filter import REASONS, UNSUITABLE, Candidate, InstructionPool, filter_candidates

SEEDS = ["alpha beta gamma delta epsilon zeta eta theta iota kappa",
         "Write a short poem about the sea at night.",
         "List three ways to save water at home.",
         "one two three four five six seven"]

CANDIDATES = [
    ("alpha beta gamma delta epsilon zeta eta lambda mu nu", "similar"),  # LCS 7 of 10 and 10: F1 exactly 0.7
    ("alpha beta gamma delta epsilon zeta eta lambda mu nu xi", None),  # 7 of 10 and 11: 0.667, kept
    ("alpha beta gamma delta epsilon zeta eta lambda mu nu omicron", "similar"),  # 0.8 with the one kept above
    ("one two three four five six seven eight nine ten eleven twelve thirteen", "similar"),  # 7 of 7 and 13: 0.7 too
    ("", "empty"),
    ("Summarize this text.", "too_short"),  # 3 words
    ("Summarize this text briefly.", None),  # 4 words
    (" ".join(["word"] * 151), "too_long"),
    (" ".join(f"w{i}" for i in range(150)), None),  # 150 words
    ("Draw a map of your neighbourhood with labels.", "unsuitable"),
    ("Describe the picture attached to this message.", "unsuitable"),
    ("Explain how to clean out a kitchen drawer quickly.", None),  # "drawer" is not "draw"
    ("Draw a map of your neighbourhood with labels please.", "unsuitable"),  # like a dropped one: still its own reason
    ("write a SHORT poem   about the sea at night.", "duplicate"),
    ("Write a short poem about the sea at dawn.", "similar"),  # LCS 8 of 9 and 9
    ("Give two reasons why people keep dogs as pets.", "no_output"),
    ("Give two reasons why cats sleep so much during the day.", None),
]


def _candidates() -> list[Candidate]:
    return [Candidate(text, "", "" if reason == "no_output" else "an answer") for text, reason in CANDIDATES]


def _reference(seeds: list[str], candidates: list[Candidate]) -> list[str | None]:
    """The rules written out plainly: every pool member scored with RougeScorer, no early exit."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool = list(seeds)
    out = []
    for c in candidates:
        text = c.instruction.strip()
        n = len(text.split())
        scores = [scorer.score(p, text)["rougeL"].fmeasure for p in pool]
        if not text:
            reason = "empty"
        elif n <= 3:
            reason = "too_short"
        elif n > 150:
            reason = "too_long"
        elif any(re.search(rf"\b{re.escape(w)}\b", text, re.I) for w in UNSUITABLE):
            reason = "unsuitable"
        elif " ".join(text.lower().split()) in {" ".join(p.lower().split()) for p in pool}:
            reason = "duplicate"
        elif max(scores) >= 0.7 or any(abs(s - 0.7) < 1e-9 for s in scores):
            reason = "similar"
        elif not c.output.strip():
            reason = "no_output"
        else:
            reason = None
            pool.append(text)
        out.append(reason)
    return out


def test_the_kept_set_equals_the_brute_force_reference():
    expected = [reason for _, reason in CANDIDATES]
    assert _reference(SEEDS, _candidates()) == expected  # the reference agrees with the hand labels
    order = _candidates()
    kept, dropped, counts = filter_candidates(InstructionPool(SEEDS), order)
    got = {id(c): v.reason for c, v in kept + dropped}
    assert [got[id(c)] for c in order] == expected
    assert [c.instruction for c, _ in kept] == [t for t, r in CANDIDATES if r is None]
    assert dict(counts) == {r: sum(x == r for _, x in CANDIDATES) for r in REASONS}
    assert set(REASONS) == {r for _, r in CANDIDATES} - {None}  # every reason exercised


def test_exactly_0_7_is_dropped_where_the_papers_code_keeps_it():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    text, _ = CANDIDATES[0]
    score = scorer.score(SEEDS[0], text)["rougeL"].fmeasure
    assert score == 0.7  # exactly: the original `if max(rouge_scores) > 0.7: continue` would keep it
    assert InstructionPool(SEEDS).check(Candidate(text, output="x")).reason == "similar"
    assert InstructionPool(SEEDS, threshold=0.71).check(Candidate(text, output="x")).reason is None
    # 7 tokens of 7 and 13 is 0.7 too, but rounds up in floating point: dropped alike
    assert scorer.score(SEEDS[3], CANDIDATES[3][0])["rougeL"].fmeasure == 0.7000000000000001


def test_a_candidate_is_compared_with_kept_candidates_not_dropped_ones():
    pool = InstructionPool(["Tell me a joke about computers and printers."])
    first = Candidate("Name five rivers that flow through Europe today.", output="")  # dropped: no output
    again = Candidate("Name five rivers that flow through Europe now.", output="Rhine")
    kept, dropped, _ = filter_candidates(pool, [first, again])
    assert [c for c, _ in kept] == [again] and [v.reason for _, v in dropped] == ["no_output"]
    verdict = pool.check(Candidate("Name five rivers that flow through Europe.", output="x"))
    assert verdict.reason == "similar" and verdict.nearest == again.instruction
    assert verdict.rouge_l == pytest.approx(2 * 7 / (7 + 8))  # LCS 7 of 7 and 8 tokens
