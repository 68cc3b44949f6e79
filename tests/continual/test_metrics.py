"""The sequence's numbers against a 3x3 matrix worked by hand (continual/metrics.py's formulas)."""

from __future__ import annotations

import pytest

from tunewright.continual.metrics import (average_accuracy, backward_transfer, forgetting, forward_transfer,
                                          transfer)

# R[i][j]: score on task j after training tasks 0..i. Task 0 rises once more after task 1 (0.95 > 0.9),
# so its largest drop (forgetting) is measured from row 1, not from its own row as BWT is.
R = [[0.90, 0.20, 0.10],
     [0.95, 0.80, 0.30],
     [0.50, 0.70, 0.95]]
ZERO_SHOT = [0.10, 0.15, 0.20]


def test_the_numbers_equal_the_hand_worked_ones():
    assert average_accuracy(R) == pytest.approx((0.50 + 0.70 + 0.95) / 3)            # 0.71667
    assert backward_transfer(R) == pytest.approx(((0.50 - 0.90) + (0.70 - 0.80)) / 2)  # -0.25
    assert forward_transfer(R, ZERO_SHOT) == pytest.approx(((0.20 - 0.15) + (0.30 - 0.20)) / 2)  # 0.075
    F, per_task = forgetting(R)
    assert per_task == pytest.approx([0.95 - 0.50, 0.80 - 0.70])                      # [0.45, 0.10]
    assert F == pytest.approx(0.275)
    numbers = transfer(R, ZERO_SHOT).to_dict()
    assert numbers.pop("forgetting_per_task") == pytest.approx([0.45, 0.10])
    assert numbers == pytest.approx({"average_accuracy": 2.15 / 3, "backward_transfer": -0.25,
                                     "forward_transfer": 0.075, "forgetting": 0.275})


def test_no_forgetting_gives_zero_backward_transfer_and_zero_forgetting():
    kept = [[0.9, 0.1], [0.9, 0.8]]
    assert backward_transfer(kept) == 0 and forgetting(kept) == (0, [0])


@pytest.mark.parametrize("bad", [[[1.0]], [[1.0, 0.5], [0.5]], []])
def test_a_matrix_that_is_not_square_is_refused(bad):
    with pytest.raises(ValueError, match="T x T"):
        average_accuracy(bad)


def test_the_zero_shot_row_must_cover_every_task():
    with pytest.raises(ValueError, match="2 scores for 3 tasks"):
        forward_transfer(R, [0.1, 0.2])
