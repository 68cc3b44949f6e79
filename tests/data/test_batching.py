"""Epoch plans: seeded, complete, length-grouped or packed as asked."""

from __future__ import annotations

import random
import statistics

import pytest

from tunewright.data.batching import MEGA_BATCH, plan_batches
from tunewright.errors import ConfigError

_rng = random.Random(1)
LENGTHS = [_rng.randint(4, 200) for _ in range(1000)]


def indices(plan):
    return sorted(i for mb in plan for row in mb for i in row)


def test_plain_plan_is_seeded_complete_and_one_example_per_row():
    plan = plan_batches(LENGTHS, 8, seed=3, epoch=0)
    assert plan == plan_batches(LENGTHS, 8, seed=3, epoch=0)
    assert plan != plan_batches(LENGTHS, 8, seed=3, epoch=1)
    assert plan != plan_batches(LENGTHS, 8, seed=4, epoch=0)
    assert indices(plan) == list(range(len(LENGTHS)))
    assert all(len(row) == 1 for mb in plan for row in mb)
    assert [len(mb) for mb in plan] == [8] * 125
    assert [len(mb) for mb in plan_batches(LENGTHS[:10], 4, seed=0, epoch=0)] == [4, 4, 2]  # short last batch kept
    assert [row[0] for mb in plan for row in mb] != list(range(len(LENGTHS)))  # shuffled


def spread(plan):
    """Mean within-batch (max - min) length."""
    return statistics.mean(max(LENGTHS[r[0]] for r in mb) - min(LENGTHS[r[0]] for r in mb) for mb in plan)


def test_group_by_length_makes_similar_batches_in_random_order():
    grouped = plan_batches(LENGTHS, 4, seed=0, epoch=0, group_by_length=True)
    plain = plan_batches(LENGTHS, 4, seed=0, epoch=0)
    assert indices(grouped) == list(range(len(LENGTHS)))
    assert spread(grouped) < spread(plain) / 5
    assert max(LENGTHS[r[0]] for r in grouped[0]) == max(LENGTHS)  # out-of-memory shows at step 1
    first_lengths = [max(LENGTHS[r[0]] for r in mb) for mb in grouped[1:]]
    assert first_lengths != sorted(first_lengths, reverse=True)  # not one long-to-short sweep
    other = plan_batches(LENGTHS, 4, seed=0, epoch=1, group_by_length=True)
    assert other != grouped and indices(other) == indices(grouped)
    assert grouped == plan_batches(LENGTHS, 4, seed=0, epoch=0, group_by_length=True)


def test_group_by_length_groups_within_mega_batches():
    # Examples sorted across the whole epoch would put the 8 longest together; per mega-batch they
    # are only the longest of their own random group.
    lengths = list(range(1, 2 * 4 * MEGA_BATCH + 1))
    plan = plan_batches(lengths, 4, seed=0, epoch=0, group_by_length=True)
    longest_batches = sorted(plan, key=lambda mb: -max(lengths[r[0]] for r in mb))[:2]
    assert any(min(lengths[r[0]] for r in mb) < len(lengths) - 8 for mb in longest_batches)


def test_packing_plan_rows_fit_and_change_per_epoch():
    plan = plan_batches(LENGTHS, 2, seed=0, epoch=0, packing=True, max_len=512)
    assert indices(plan) == list(range(len(LENGTHS)))
    rows = [row for mb in plan for row in mb]
    assert all(sum(LENGTHS[i] for i in row) <= 512 for row in rows)
    assert sum(map(len, rows)) > len(rows) * 3  # several examples per row
    assert all(len(mb) == 2 for mb in plan[:-1])
    assert plan == plan_batches(LENGTHS, 2, seed=0, epoch=0, packing=True, max_len=512)
    again = plan_batches(LENGTHS, 2, seed=0, epoch=1, packing=True, max_len=512)
    assert {tuple(sorted(r)) for mb in again for r in mb} != {tuple(sorted(r)) for r in rows}


def test_bad_arguments():
    with pytest.raises(ConfigError, match="needs the packed row length"):
        plan_batches(LENGTHS, 2, seed=0, epoch=0, packing=True)
    with pytest.raises(ConfigError, match="micro_batch_size"):
        plan_batches(LENGTHS, 0, seed=0, epoch=0)
    assert plan_batches([], 4, seed=0, epoch=0) == []
    assert plan_batches([], 4, seed=0, epoch=0, group_by_length=True) == []
