"""Replay: the buffer mixed in through the run's own seeded mixture and epoch plan holds its ratio
within ±2% over 1,000 batches; reservoir inclusion is uniform over the whole stream of tasks
(chi-square, p > 0.01); per-task quotas are equal; the buffer round-trips through JSON."""

from __future__ import annotations

import pytest
from scipy.stats import chisquare

from tunewright.config import DataConfig
from tunewright.continual import replay
from tunewright.data.mixture import build_splits
from tunewright.data.pipeline import make_plan
from tunewright.data.types import Encoded


def _rows(task: str, n: int) -> list[dict]:
    return [{"text": f"{task} row {i}", "label": task} for i in range(n)]


@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_replayed_rows_hold_their_ratio_over_1000_batches(tmp_path, ratio):
    task = tmp_path / "task_b.jsonl"
    task.write_text("".join(f'{{"text": "b row {i}", "label": "b"}}\n' for i in range(90)))
    buffer = replay.update(replay.empty(), "a", _rows("a", 60), replay.Config(buffer_size=20), seed=3)
    source = replay.write_source(buffer, tmp_path / "replay.jsonl", "classification", n_task=90, ratio=ratio)
    data_cfg = DataConfig(datasets=[{"path": str(task), "format": "classification"}, source])

    train, _, _ = build_splits(data_cfg, seed=3)  # the run's mixture: weights applied, seeded
    replayed = [ex.messages[0].content.startswith("a row") for ex in train]
    plan = make_plan([Encoded([1 + r], [1 + r]) for r in replayed], data_cfg, micro_batch_size=8, seed=3,
                     packed=False)
    batches, epoch = [], 0
    while len(batches) < 1000:  # the epochs as the loop draws them, reshuffled each epoch
        batches += plan(epoch)
        epoch += 1
    rows = [e for mb in batches[:1000] for row in mb for e in row]
    share = sum(e.input_ids[0] == 2 for e in rows) / len(rows)
    assert abs(share - ratio) <= 0.02


def test_reservoir_inclusion_is_uniform_over_the_stream_of_tasks():
    """Two tasks of 10 rows each into a buffer of 5, over 2,000 seeds: each of the 20 rows is kept
    2000 · 5/20 = 500 times in expectation, the first task's as often as the second's."""
    counts = {f"{t} row {i}": 0 for t in "ab" for i in range(10)}
    cfg = replay.Config(buffer_size=5, selection="reservoir")
    for seed in range(2000):
        buffer = replay.update(replay.empty(), "a", _rows("a", 10), cfg, seed)
        buffer = replay.update(buffer, "b", _rows("b", 10), cfg, seed)
        assert len(buffer["rows"]) == 5 and buffer["seen"] == 20
        for kept in buffer["rows"]:
            counts[kept["row"]["text"]] += 1
    assert chisquare(list(counts.values())).pvalue > 0.01
    assert sum(counts.values()) == 10_000


def test_per_task_keeps_an_equal_seeded_quota_of_each_task(tmp_path):
    cfg = replay.Config(buffer_size=12, selection="per_task")
    one = replay.update(replay.empty(), "a", _rows("a", 30), cfg, seed=1)
    assert [r["task"] for r in one["rows"]] == ["a"] * 12
    two = replay.update(one, "b", _rows("b", 30), cfg, seed=1)
    three = replay.update(two, "c", _rows("c", 30), cfg, seed=1)
    assert [r["task"] for r in three["rows"]] == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert three["rows"][:4] == one["rows"][:4]  # an older quota is a prefix of its sample
    assert len({r["row"]["text"] for r in three["rows"]}) == 12  # no row twice
    replay.save(three, tmp_path / "replay.json")
    assert replay.load(tmp_path / "replay.json") == three
    assert replay.update(replay.empty(), "a", _rows("a", 30), cfg, seed=1) == one  # seeded


def test_the_mixture_weight_gives_the_ratio():
    w = replay.mix_weight(90, 20, 0.3)
    assert 20 * w / (90 + 20 * w) == pytest.approx(0.3)
