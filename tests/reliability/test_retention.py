"""save_total_limit across 1,000 simulated saves never deletes the newest or the best checkpoint,
and orders by step number, not by name (step-9 before step-10)."""

import random

import pytest

from tunewright.training import checkpoint as ck


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_thousand_saves_keep_newest_and_best(tmp_path, limit):
    rng = random.Random(limit)
    best, best_value, step = None, float("inf"), 0
    for _ in range(1000):
        step += rng.choice([1, 1, 3, 9, 10])  # crosses 9 -> 10, 99 -> 100, ... where names sort wrongly
        folder = tmp_path / f"step-{step}"
        folder.mkdir()
        (folder / ck.COMPLETE).write_text(str(step))
        value = rng.random()
        if value < best_value:
            best, best_value = step, value
        ck.prune_checkpoints(tmp_path, limit=limit, best_step=best)
        kept = [s for s, _ in ck.complete_checkpoints(tmp_path)]
        assert step in kept and best in kept
        assert len(kept) <= max(limit, 2 if best != step else 1)
        assert kept == sorted(kept)
    # the survivors are the newest ones (plus the best), by number
    newest = sorted(kept)[-1]
    assert newest == step
