"""Atomic checkpoints, weights_only state, RNG round trip, retention by step number."""

import random

import numpy as np
import pytest
import torch

from tunewright.training import checkpoint as ck


def _parts():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    sched.step()
    return p, opt, sched


def _save(root, step, opt, sched, state=None):
    return ck.save_checkpoint(root, step, save_weights=lambda d: (d / "w.txt").write_text("w"), optimizer=opt,
                              scheduler=sched, trainer_state=state or {"step": step})


def test_save_is_complete_and_state_round_trips(tmp_path):
    p, opt, sched = _parts()
    path = _save(tmp_path, 5, opt, sched)
    assert (path / ck.COMPLETE).is_file() and not list(tmp_path.glob(".tmp-*"))
    p2 = torch.nn.Parameter(torch.ones(3))
    opt2 = torch.optim.AdamW([p2], lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (s + 1))
    state = ck.load_training_state(path, opt2, sched2)
    assert state == {"step": 5}
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert sched2.last_epoch == sched.last_epoch


def test_rng_state_round_trip(tmp_path):
    _, opt, sched = _parts()
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    random.gauss(0, 1)  # leaves a cached gauss value in Python's state
    path = _save(tmp_path, 1, opt, sched)
    expected = (torch.rand(3), random.random(), random.gauss(0, 1), np.random.rand(2))
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    ck.load_training_state(path, opt, sched)
    got = (torch.rand(3), random.random(), random.gauss(0, 1), np.random.rand(2))
    torch.testing.assert_close(got[0], expected[0])
    assert got[1:3] == expected[1:3]
    np.testing.assert_array_equal(got[3], expected[3])


def test_state_files_load_with_weights_only(tmp_path):
    _, opt, sched = _parts()
    path = _save(tmp_path, 1, opt, sched)
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
        torch.load(path / name, weights_only=True)  # raises if anything needs unpickling


def test_incomplete_folders_are_ignored(tmp_path):
    _, opt, sched = _parts()
    _save(tmp_path, 2, opt, sched)
    (tmp_path / "step-9").mkdir()  # crashed before the marker
    (tmp_path / ".tmp-step-10").mkdir()  # crashed mid-write
    assert ck.latest_checkpoint(tmp_path).name == "step-2"


def test_retention_orders_by_step_and_keeps_newest_and_best(tmp_path):
    _, opt, sched = _parts()
    for step in (1, 2, 9, 10, 100):
        _save(tmp_path, step, opt, sched)
        ck.prune_checkpoints(tmp_path, limit=2, best_step=2)
    assert [s for s, _ in ck.complete_checkpoints(tmp_path)] == [2, 100]


@pytest.mark.parametrize("seed", range(3))
def test_retention_many_saves_never_loses_newest_or_best(tmp_path, seed):
    rng = random.Random(seed)
    root = tmp_path
    best, best_val = None, float("inf")
    for step in range(1, 60):
        d = root / f"step-{step}"
        d.mkdir()
        (d / ck.COMPLETE).write_text(str(step))
        val = rng.random()
        if val < best_val:
            best, best_val = step, val
        ck.prune_checkpoints(root, limit=3, best_step=best)
        kept = [s for s, _ in ck.complete_checkpoints(root)]
        assert step in kept and best in kept and len(kept) <= 3


def test_the_marker_is_a_manifest_that_verify_checks(tmp_path):
    import json

    _, opt, sched = _parts()
    path = _save(tmp_path, 3, opt, sched)
    recorded = json.loads((path / ck.COMPLETE).read_text())
    assert recorded["step"] == 3 and "optimizer.pt" in recorded["files"]
    assert ck.verify(path) is None
    data = bytearray((path / "rng.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped, same size
    (path / "rng.pt").write_bytes(bytes(data))
    assert "rng.pt does not match its checksum" in ck.verify(path)
    (path / "rng.pt").unlink()
    assert ck.verify(path) == "rng.pt is missing"
    (path / ck.COMPLETE).unlink()
    assert "no 'complete' marker" in ck.verify(path)
