"""Metric sinks: metrics.jsonl, TensorBoard (the same values as metrics.jsonl in a real run), the
error for a sink whose package is missing, and the progress bar's rate."""

from __future__ import annotations

import json
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tunewright.errors import ConfigError
from tunewright.training import logging as twlog
from tunewright.training.logging import MetricsLog, Progress, read_metrics


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_metrics_jsonl_holds_one_line_per_event(tmp_path):
    log = MetricsLog(tmp_path, [], "r")
    log.log(1, {"loss": 2.5, "lr": 0.1})
    log.log(1, {"eval_loss": 3.0})
    log.log(2, {"loss": 2.0, "lr": 0.05})
    log.close()
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.5, "lr": 0.1}, {"step": 1, "eval_loss": 3.0},
                                      {"step": 2, "loss": 2.0, "lr": 0.05}]
    assert read_metrics(tmp_path / "elsewhere") == []


def test_a_disabled_log_writes_nothing(tmp_path):
    # ranks other than the main one of a distributed run
    log = MetricsLog(tmp_path, ["tensorboard"], "r", enabled=False)
    log.log(1, {"loss": 1.0})
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_a_sink_without_its_package_is_a_config_error(tmp_path, monkeypatch):
    real = twlog.importlib.util.find_spec
    monkeypatch.setattr(twlog.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError, match=r"train.report_to: 'wandb' needs the `wandb` package \(pip install wandb\)"):
        MetricsLog(tmp_path, ["wandb"], "r")


def test_tensorboard_skips_values_it_cannot_plot(tmp_path):
    log = MetricsLog(tmp_path, ["tensorboard"], "r")
    log.log(1, {"loss": math.nan, "lr": 0.1, "note": "text", "tokens": 12})
    log.close()
    scalars = _scalars(tmp_path / "tensorboard")
    assert set(scalars) == {"lr", "tokens"}
    assert scalars["tokens"] == [(1, 12.0)]
    assert math.isnan(read_metrics(tmp_path)[0]["loss"])  # metrics.jsonl keeps everything


def test_progress_reports_tokens_per_second():
    import time

    bar = Progress(total=3, start=1)  # a resumed run starts the bar at its step
    time.sleep(0.05)
    rate = bar.update({"loss": 1.0, "lr": 0.1}, tokens=500)
    assert 0 < rate <= 500 / 0.05 and bar.bar.n == 2
    bar.close()


def test_a_run_reporting_to_tensorboard_logs_the_metrics_jsonl_values(tiny_model_dir, tmp_path):
    import tunewright

    rows = [{"instruction": f"Repeat the number {i}.", "output": f"number {i} " * (1 + i % 3)} for i in range(12)]
    data = tmp_path / "a.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"model": {"name": tiny_model_dir("llama")},
           "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca", "cutoff_len": 64,
                    "val_set_size": 4, "cache_dir": str(tmp_path / "cache")},
           "method": {"name": "lora", "r": 4},
           "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 3, "learning_rate": 1e-2,
                     "report_to": ["tensorboard"]},
           "eval": {"steps": 2, "at_start": True},
           "output": {"dir": str(tmp_path / "runs"), "name": "tb"}}
    result = tunewright.train(cfg)
    scalars = _scalars(result.run_dir / "tensorboard")
    metrics = read_metrics(result.run_dir)
    for tag in ("loss", "lr", "grad_norm", "eval_loss", "eval_perplexity"):
        want = [(m["step"], m[tag]) for m in metrics if tag in m]
        got = scalars[tag]
        assert [s for s, _ in got] == [s for s, _ in want], tag
        # TensorBoard stores float32
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), tag
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3]
    assert [s for s, _ in scalars["eval_loss"]] == [0, 2, 3]


def test_read_metrics_leaves_out_a_torn_last_line_and_names_a_bad_middle_one(tmp_path):
    import pytest

    from tunewright.errors import ConfigError
    from tunewright.training.logging import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    torn: list = []
    assert read_metrics(tmp_path, torn) == [{"step": 1, "loss": 2.0}] and torn == ['{"step": 2, "lo']
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ConfigError, match=r"metrics.jsonl:2: not a metrics line"):
        read_metrics(tmp_path)


def test_append_line_cuts_a_partial_write_back_off(tmp_path, monkeypatch):
    import errno
    import os

    import pytest

    from tunewright.disk import DiskWriteError
    from tunewright.training.logging import append_line

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n')
    real_write = os.write

    def short_then_full(fd, data):  # the disk takes 5 bytes, then is full
        if len(data) > 5:
            return real_write(fd, data[:5])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(DiskWriteError, match=r"metrics.jsonl: append a metrics line failed: ENOSPC"):
        append_line(path, '{"step": 2, "loss": 1.0}')
    monkeypatch.undo()
    assert path.read_text() == '{"step": 1}\n'
