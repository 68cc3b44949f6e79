"""Disk faults (issue 7, point 9): ENOSPC or EROFS injected at the write, fsync or rename of a
checkpoint save leaves the previous checkpoint intact and loadable, no partial folder is taken for a
complete checkpoint, and the error is one line naming the file, the operation and the errno.

chmod does not stop root, so the faults are injected by monkeypatching the calls the save makes:
torch.save, safetensors' save_file (through PEFT), Path.write_text, os.fsync and os.replace. Each
fault is armed only once step-1 is complete, so it lands inside the save of step 2."""

import errno
import json
import os
from pathlib import Path

import peft.peft_model
import pytest
import torch
from safetensors.torch import load_file

import tunewright
from tunewright.errors import TunewrightError
from tunewright.training import checkpoint
from tunewright.training.checkpoint import complete_checkpoints, latest_checkpoint

CODES = {"ENOSPC": errno.ENOSPC, "EROFS": errno.EROFS}


def _cfg(tmp_path, model, **train):
    rows = [{"instruction": f"Say {i}.", "input": "", "output": "ok " * (1 + i % 3)} for i in range(12)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": {"name": model},
            "data": {"datasets": [{"path": str(tmp_path / "d.jsonl"), "format": "alpaca"}], "template": "alpaca",
                     "cutoff_len": 64},
            "method": {"name": "lora", "r": 4, "target_modules": "all-linear"},
            "train": {"batch_size": 2, "micro_batch_size": 2, "max_steps": 3, "learning_rate": 1e-3, "seed": 3, **train},
            "output": {"dir": str(tmp_path / "runs"), "name": "run", "save_steps": 1}}


def _armed(tmp_path) -> bool:
    """True from the start of step 2's save (its temporary folder exists) onwards."""
    ckpts = tmp_path / "runs" / "run" / "checkpoints"
    return (ckpts / ".tmp-step-2").is_dir() or (ckpts / "step-2").is_dir()


def _fail(code: int, file) -> OSError:
    return OSError(code, os.strerror(code), None if file is None else str(file))


def _inject(where: str, code: int, tmp_path, monkeypatch):
    """Patch the call named by `where` to raise OSError(code) during the save of step 2."""
    if where == "torch.save":
        real = torch.save

        def fake(obj, f, *a, **k):
            if _armed(tmp_path) and ".tmp-step-" in str(f):
                raise _fail(code, f)
            return real(obj, f, *a, **k)
        monkeypatch.setattr(torch, "save", fake)
    elif where == "safetensors":
        real_st = peft.peft_model.safe_save_file

        def fake_st(tensors, filename, *a, **k):
            if _armed(tmp_path):
                raise _fail(code, filename)
            return real_st(tensors, filename, *a, **k)
        monkeypatch.setattr(peft.peft_model, "safe_save_file", fake_st)
    elif where == "write_text":
        real_wt = Path.write_text

        def fake_wt(self, *a, **k):
            if _armed(tmp_path) and self.name == "trainer_state.json":
                raise _fail(code, self)
            return real_wt(self, *a, **k)
        monkeypatch.setattr(Path, "write_text", fake_wt)
    elif where == "fsync":
        real_fs = os.fsync

        def fake_fs(fd):
            if _armed(tmp_path):
                raise _fail(code, None)
            return real_fs(fd)
        monkeypatch.setattr(os, "fsync", fake_fs)
    elif where == "rename":
        real_rp = os.replace

        def fake_rp(src, dst, *a, **k):
            if _armed(tmp_path) and ".tmp-step-" in str(src):
                raise _fail(code, src)
            return real_rp(src, dst, *a, **k)
        monkeypatch.setattr(os, "replace", fake_rp)
    elif where == "marker":  # the `complete` file written after the rename
        real_m = Path.write_text

        def fake_m(self, *a, **k):
            if _armed(tmp_path) and self.name == checkpoint.COMPLETE:
                raise _fail(code, self)
            return real_m(self, *a, **k)
        monkeypatch.setattr(Path, "write_text", fake_m)


def _assert_step1_intact(ckpt_root: Path, before: dict):
    assert [s for s, _ in complete_checkpoints(ckpt_root)] == [1]
    step1 = latest_checkpoint(ckpt_root)
    assert step1.name == "step-1"
    after = load_file(step1 / "adapter_model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
        torch.load(step1 / name, weights_only=True)
    assert json.loads((step1 / "trainer_state.json").read_text())["step"] == 1


@pytest.mark.parametrize("code_name", sorted(CODES))
@pytest.mark.parametrize("where,op", [("torch.save", "write"), ("safetensors", "write weights"),
                                      ("write_text", "write"), ("fsync", "fsync"), ("rename", "rename"),
                                      ("marker", "write")])
def test_fault_during_save_keeps_previous_checkpoint(tmp_path, tiny_model_dir, monkeypatch, where, op, code_name, tally):
    code = CODES[code_name]
    cfg = _cfg(tmp_path, tiny_model_dir("llama"))
    ckpt_root = tmp_path / "runs" / "run" / "checkpoints"
    seen = {}
    real_save = checkpoint.save_checkpoint

    def spy(root, step, **kw):  # remember step-1's weights, to compare after the fault
        out = real_save(root, step, **kw)
        if step == 1:
            seen.update(load_file(out / "adapter_model.safetensors"))
        return out
    monkeypatch.setattr(checkpoint, "save_checkpoint", spy)  # train() imports it at call time
    _inject(where, code, tmp_path, monkeypatch)
    with pytest.raises(TunewrightError) as err:
        tunewright.train(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert code_name in message and "step-2" in message and f": {op} failed" in message, message
    assert message.startswith(str(ckpt_root)), message  # names the file
    monkeypatch.undo()  # the disk is healthy again for the checks
    _assert_step1_intact(ckpt_root, seen)
    tally("disk faults injected")


def test_resume_after_disk_full_continues_from_previous_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    cfg = _cfg(tmp_path, tiny_model_dir("llama"))
    _inject("torch.save", errno.ENOSPC, tmp_path, monkeypatch)
    with pytest.raises(TunewrightError, match="ENOSPC"):
        tunewright.train(cfg)
    monkeypatch.undo()
    resumed = tunewright.train({**cfg, "train": {**cfg["train"], "resume": "auto"}})
    assert [s for s, _ in complete_checkpoints(resumed.run_dir / "checkpoints")] == [1, 2, 3]
    assert not list((resumed.run_dir / "checkpoints").glob(".tmp-*"))
