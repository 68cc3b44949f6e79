"""Metrics against hand-computed values."""

import pytest

from tunewright.eval.metrics import corpus_scores, exact_match, rouge_l


def test_exact_match_trims_outer_whitespace_only():
    assert exact_match(" a b\n", "a b") == 1.0
    assert exact_match("a  b", "a b") == 0.0


def test_rouge_l_of_the_course_example():
    # LCS of "it is very cold outside" and "it is cold outside" is 4 tokens: P 4/5, R 4/4
    assert rouge_l("It is very cold outside", "It is cold outside") == pytest.approx(2 * 0.8 * 1.0 / 1.8)


def test_corpus_scores_average_examples():
    scores = corpus_scores(["a b", "x"], ["a b", "y"])
    assert scores == {"exact_match": 0.5, "rouge_l": pytest.approx(0.5)}
    with pytest.raises(ValueError):
        corpus_scores([], [])
