"""Where metrics go: `metrics.jsonl` always, TensorBoard/W&B/MLflow when asked, and a progress bar.

Every sink receives the same `(step, metrics)` pairs, so the curves agree wherever they are read.
A line of metrics.jsonl is whole or absent: a write the disk cuts short is truncated away before
the error is raised, and a torn last line left by a crash (power loss mid-write) is dropped, with
a message, when the run is resumed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

from tunewright.disk import writing
from tunewright.errors import ConfigError

__all__ = ["MetricsLog", "Progress", "read_metrics", "append_line"]


class _TensorBoard:
    def __init__(self, run_dir: Path, name: str, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter
        # purge_step: a resumed run drops the interrupted attempt's points after its checkpoint
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step or None)

    def log(self, step: int, metrics: dict) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, name: str, start_step: int = 0):
        import wandb
        self.run = wandb.init(project="tunewright", name=name, dir=str(run_dir))

    def log(self, step: int, metrics: dict) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, run_dir: Path, name: str, start_step: int = 0):
        import mlflow
        self.mlflow = mlflow
        mlflow.start_run(run_name=name)

    def log(self, step: int, metrics: dict) -> None:
        self.mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


SINKS = {"tensorboard": ("tensorboard", _TensorBoard), "wandb": ("wandb", _Wandb), "mlflow": ("mlflow", _MLflow)}


class MetricsLog:
    """Appends one json line per logging event to `run_dir/metrics.jsonl` and mirrors it to sinks."""

    def __init__(self, run_dir: Path, report_to: list[str], name: str, enabled: bool = True, start_step: int = 0):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.sinks = []
        if not enabled:
            return
        for sink in report_to:
            module, cls = SINKS[sink]
            if importlib.util.find_spec(module) is None:
                raise ConfigError(f"train.report_to: {sink!r} needs the `{module}` package (pip install {module})")
            self.sinks.append(cls(Path(run_dir), name, start_step))

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        append_line(self.path, json.dumps({"step": step, **metrics}))
        for sink in self.sinks:
            sink.log(step, metrics)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def append_line(path: Path, line: str) -> None:
    """Append `line` + newline in one unbuffered write; if the disk takes only part of it, cut the
    file back to where it was, so no reader ever meets half a line."""
    data = (line + "\n").encode("utf-8")
    with writing(path, "append a metrics line", "the lines before it are intact; free space, then resume "
                 "with train.resume=auto"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                done = 0
                while done < len(data):
                    done += os.write(fd, data[done:])
            except OSError:
                os.ftruncate(fd, size)  # frees what the partial line took, even on a full disk
                raise
        finally:
            os.close(fd)


def read_metrics(run_dir: Path, torn: list | None = None) -> list[dict]:
    """The lines of `run_dir/metrics.jsonl`. A last line without its newline or not valid JSON is
    what a crash mid-write leaves: it is left out (and appended to `torn` when given); a bad line
    anywhere else is an error naming it."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines)  # text after the final newline: the line was never finished
        try:
            row = None if last else json.loads(line)
        except ValueError:
            row = None
        if row is None or not isinstance(row, dict) or "step" not in row:
            if last or (number == len(lines) - 1 and not lines[-1]):  # the file's final line
                if torn is not None:
                    torn.append(line)
                continue
            raise ConfigError(f"{path}:{number}: not a metrics line (JSON with a step); fix or remove the line")
        rows.append(row)
    return rows


class Progress:
    """A tqdm bar over optimizer steps showing loss, lr, tokens/s and the ETA."""

    def __init__(self, total: int, start: int, enabled: bool = True):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, disable=not enabled,
                        file=sys.stderr, desc="train")
        self.t0, self.tokens = time.perf_counter(), 0

    def update(self, metrics: dict, tokens: int) -> float:
        """Advance one step; return tokens/s since the start of this process."""
        self.tokens += tokens
        rate = self.tokens / max(1e-9, time.perf_counter() - self.t0)
        self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", tok_s=f"{rate:,.0f}", refresh=False)
        self.bar.update(1)
        return rate

    def write(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
