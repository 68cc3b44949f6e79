"""draw_splits: distinct inputs across splits, independent streams per split, a clear error when short."""

from __future__ import annotations

import pytest

from tunewright.errors import ConfigError
from tunewright.lab.splits import draw_splits, input_key, instruct_row


def _numbers(split, rng):
    n = rng.randint(0, 49)
    return n, {"n": n}


def test_inputs_are_unique_across_splits():
    splits = draw_splits("t", 0, dict(train=30, validation=10, test=10), _numbers)
    values = [r["n"] for rows in splits.values() for r in rows]
    assert len(values) == len(set(values)) == 50


def test_each_split_has_its_own_stream():
    """Entity-held-out tasks keep their test rows when the training set grows."""
    def by_split(split, rng):
        n = rng.random()
        return (split, n), {"n": n}

    a = draw_splits("t", 0, dict(train=5, validation=2, test=3), by_split)
    b = draw_splits("t", 0, dict(train=50, validation=2, test=3), by_split)
    assert a["test"] == b["test"] and a["train"] == b["train"][:5]


def test_running_out_of_distinct_inputs_is_a_config_error():
    with pytest.raises(ConfigError, match=r"lab task t: n_test: found only 10 distinct test rows of the 20 asked"):
        draw_splits("t", 0, dict(train=30, validation=10, test=20), _numbers)
    with pytest.raises(ConfigError, match=r"n_train: expected a count >= 0, got 2.5"):
        draw_splits("t", 0, dict(train=2.5, validation=1, test=1), _numbers)


def test_instruct_row_in_both_formats_has_the_same_input_key():
    alpaca = instruct_row("Reverse the word.", "dorvi", "ivrod", "alpaca")
    messages = instruct_row("Reverse the word.", "dorvi", "ivrod", "messages")
    assert alpaca == {"instruction": "Reverse the word.", "input": "dorvi", "output": "ivrod"}
    assert messages["messages"][0] == {"role": "user", "content": "Reverse the word.\n\ndorvi"}
    assert instruct_row("Hi", "", "Hello", "messages")["messages"][0]["content"] == "Hi"
    assert input_key(alpaca) != input_key(instruct_row("Reverse the word.", "kalu", "ulak", "alpaca"))
