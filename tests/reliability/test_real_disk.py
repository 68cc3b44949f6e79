"""Real disk faults (issue 11, rows 1 and 7): a small tmpfs as `output.dir` fills up or turns
read-only under a run. torch.save, safetensors and our own writes each report it their own way;
the user sees one line naming the file and the errno, earlier checkpoints stay sound, no half line
is left in metrics.jsonl, and once space returns `resume: auto` completes.

Needs `mount` (root, or a container allowed to mount); skipped with the reason elsewhere. The
injected faults of test_disk_faults.py run everywhere.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tunewright
from tunewright.disk import DiskWriteError
from tunewright.errors import TunewrightError
from tunewright.training.checkpoint import complete_checkpoints, verify
from tunewright.training.logging import append_line, read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from processes import tiny_run  # noqa: E402


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                   capture_output=True)


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(size)` -> a fresh tmpfs mounted under tmp_path, unmounted after the test."""
    mounted = []

    def make(size: str) -> Path:
        path = tmp_path / f"fs{len(mounted)}"
        try:
            _mount(path, size)
        except (OSError, subprocess.CalledProcessError) as err:
            pytest.skip(f"cannot mount a tmpfs here ({getattr(err, 'stderr', b'') or err!s}); the injected "
                        f"disk faults cover the code paths")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(fs: Path) -> None:
    """Take every free block of `fs`."""
    with open(fs / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


def test_a_metrics_line_the_disk_cuts_short_is_removed(tmpfs, tally):
    fs = tmpfs("1m")
    run_dir = fs / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n' + "x" * (4096 - 26 - 30) + "\n")
    before = (run_dir / "metrics.jsonl").read_bytes()  # 30 bytes short of a page: the next line crosses it
    _fill(fs)
    with pytest.raises(DiskWriteError) as err:
        append_line(run_dir / "metrics.jsonl", json.dumps({"step": 2, "loss": 0.5, "pad": "y" * 200}))
    message = str(err.value)
    assert "\n" not in message and "ENOSPC" in message and "metrics.jsonl" in message
    assert (run_dir / "metrics.jsonl").read_bytes() == before  # the torn part was cut back off
    tally("real disk faults")


def test_full_disk_during_full_fine_tuning_then_resume(tmpfs, tmp_path, tiny_model_dir, tally):
    """Full fine-tuning saves ~2 MB per checkpoint; a 3 MB tmpfs takes step 1 and fills during
    step 2's save (in torch.save or safetensors, wherever the space ends)."""
    fs = tmpfs("3m")
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "full",
                   train={"max_steps": 4, "learning_rate": 1e-4}, output={"dir": str(fs), "save_steps": 1})
    cfg["method"] = {"name": "full"}
    with pytest.raises(TunewrightError) as err:
        tunewright.train(cfg)
    message = str(err.value)
    assert "\n" not in message and "ENOSPC" in message and str(fs) in message, message
    run_dir = fs / "full"
    done = complete_checkpoints(run_dir / "checkpoints")
    assert done and all(verify(folder) is None for _, folder in done)
    assert all(json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())

    _remount(fs, "size=64m")  # space returns
    resumed = tunewright.train({**cfg, "train": {**cfg["train"], "resume": "auto"}})
    assert resumed.steps == 4 and (run_dir / "final" / "model.safetensors").is_file()
    assert [m["step"] for m in read_metrics(run_dir) if "loss" in m] == [1, 2, 3, 4]
    tally("real disk faults")


def test_read_only_disk_is_one_line_then_resume_completes(tmpfs, tmp_path, tiny_model_dir, tally):
    fs = tmpfs("16m")
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "ro", train={"max_steps": 2}, output={"dir": str(fs)})
    tunewright.train(cfg)
    _remount(fs, "ro")
    more = {**cfg, "train": {**cfg["train"], "max_steps": 4, "resume": "auto"}}
    with pytest.raises(TunewrightError) as err:
        tunewright.train(more)
    message = str(err.value)
    assert "\n" not in message and "EROFS" in message and str(fs) in message, message
    _remount(fs, "rw")
    assert tunewright.train(more).steps == 4
    tally("real disk faults")


def test_no_space_for_the_tokenization_cache_is_said_and_training_goes_on(tmpfs, tmp_path, tiny_model_dir, tally):
    fs = tmpfs("1m")
    _fill(fs)
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "cache", train={"max_steps": 2},
                   data={"cache_dir": str(fs / "tokenized")})
    with pytest.warns(UserWarning, match=r"tokenization cache: cannot store .* ENOSPC .* training goes on"):
        assert tunewright.train(cfg).steps == 2
    tally("real disk faults")


def test_a_torn_last_line_from_a_crash_is_dropped_on_resume(tmp_path, tiny_model_dir, capsys, tally):
    """Power lost mid-append leaves half a line; resume drops it (saying so) instead of failing on it."""
    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "torn", train={"max_steps": 2}, output={"save_steps": 2})
    done = tunewright.train(cfg)
    with open(done.run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.12')
    capsys.readouterr()
    result = tunewright.train({**cfg, "train": {**cfg["train"], "max_steps": 4, "resume": "auto"}})
    assert "metrics.jsonl: dropped a torn last line" in capsys.readouterr().out
    assert result.steps == 4 and [m["step"] for m in read_metrics(done.run_dir)] == [1, 2, 3, 4]
    tally("real disk faults")
