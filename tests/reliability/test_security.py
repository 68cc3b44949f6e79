"""Security canaries (issue 7, point 8): a checkpoint carrying a pickle payload is refused without
running it; a model folder that needs its own code is refused unless trust_remote_code; run names
cannot escape the output folder; tokens in the environment never reach logs, saved configs,
checkpoints or the console."""

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import tunewright
from tunewright.errors import TunewrightError
from tunewright.models.load import read_model_config
from tunewright.training.checkpoint import COMPLETE, latest_checkpoint, manifest

HF_SECRET = "hf_CanaryCanaryCanaryCanaryCanary1234"
WANDB_SECRET = "wandbcanary0123456789abcdef0123456789abcd"


class _Payload:
    """Unpickling this creates MARKER: proof the pickle ran code."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _cfg(tmp_path, model, name="run", **train):
    rows = [{"instruction": f"Say {i}.", "input": "", "output": "ok " * (1 + i % 3)} for i in range(12)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": {"name": model},
            "data": {"datasets": [{"path": str(tmp_path / "d.jsonl"), "format": "alpaca"}], "template": "alpaca",
                     "cutoff_len": 64},
            "method": {"name": "lora", "r": 4, "target_modules": "all-linear"},
            "train": {"batch_size": 2, "micro_batch_size": 2, "max_steps": 2, "learning_rate": 1e-3, "seed": 3, **train},
            "output": {"dir": str(tmp_path / "runs"), "name": name, "save_steps": 1}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("sec")
    cfg = _cfg(tmp, tiny_model_dir("llama"))
    return tmp, cfg, tunewright.train(cfg).run_dir


def _reseal(ckpt):
    """Rewrite the checkpoint's manifest to match the tampered files, as an attacker who shares a
    checkpoint would: a checksum finds corruption, not malice; weights_only loading must hold."""
    (ckpt / COMPLETE).write_text(json.dumps({"step": int(ckpt.name.split("-")[1]), "files": manifest(ckpt)}))


@pytest.mark.parametrize("victim", ["optimizer.pt", "scheduler.pt", "rng.pt"])
def test_pickle_payload_in_checkpoint_is_refused_without_running(finished_run, tmp_path, victim, tally):
    src_tmp, cfg, run_dir = finished_run
    run = tmp_path / "runs" / "run"
    shutil.copytree(run_dir, run)
    marker = tmp_path / "PWNED"
    _Payload.marker = str(marker)
    ckpt = latest_checkpoint(run / "checkpoints")
    # torch.save pickles arbitrary objects: exactly what a malicious shared checkpoint would hold
    torch.save({"state": _Payload()}, ckpt / victim)
    _reseal(ckpt)
    assert not marker.exists()
    cfg = {**cfg, "output": {**cfg["output"], "dir": str(tmp_path / "runs")},
           "train": {**cfg["train"], "max_steps": 3, "resume": "auto"}}
    with pytest.raises(TunewrightError) as err:
        tunewright.train(cfg)
    assert not marker.exists(), "the pickle payload was executed"
    assert "\n" not in str(err.value) and victim in str(err.value)
    tally("security canaries")


def test_plain_pickle_file_is_refused_too(finished_run, tmp_path):
    _, cfg, run_dir = finished_run
    run = tmp_path / "runs" / "run"
    shutil.copytree(run_dir, run)
    marker = tmp_path / "PWNED"
    _Payload.marker = str(marker)
    (latest_checkpoint(run / "checkpoints") / "rng.pt").write_bytes(pickle.dumps(_Payload()))
    _reseal(latest_checkpoint(run / "checkpoints"))
    cfg = {**cfg, "output": {**cfg["output"], "dir": str(tmp_path / "runs")},
           "train": {**cfg["train"], "max_steps": 3, "resume": "auto"}}
    with pytest.raises(TunewrightError):
        tunewright.train(cfg)
    assert not marker.exists()


def _remote_code_model(tmp_path, tiny_model_dir):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_model_dir("llama"), folder)
    conf = json.loads((folder / "config.json").read_text())
    conf.update(model_type="canary_arch", auto_map={"AutoConfig": "modeling_canary.CanaryConfig",
                                                    "AutoModelForCausalLM": "modeling_canary.CanaryModel"})
    (folder / "config.json").write_text(json.dumps(conf))
    marker = tmp_path / "REMOTE_RAN"
    (folder / "modeling_canary.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return folder, marker


def test_remote_code_model_is_refused_without_trust(tmp_path, tiny_model_dir, tally):
    folder, marker = _remote_code_model(tmp_path, tiny_model_dir)
    with pytest.raises(TunewrightError, match="trust_remote_code"):
        read_model_config(str(folder))
    cfg = _cfg(tmp_path, str(folder))
    with pytest.raises(TunewrightError, match="trust_remote_code") as err:
        tunewright.train(cfg)
    assert "\n" not in str(err.value)
    assert not marker.exists(), "the model's own code was imported"
    tally("security canaries")


@pytest.mark.parametrize("name", ["../escape", "..", "a/../../b", "/abs/run", "nul\0name", "back\\slash", ""])
def test_run_name_cannot_escape_output_dir(tmp_path, tiny_model_dir, name, tally):
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), name=name)
    with pytest.raises(TunewrightError) as err:
        tunewright.train(cfg)
    assert "output.name" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"], "something was written outside"
    tally("security canaries")


@pytest.mark.parametrize("path", ["/nonexistent/../../etc", "../../../etc/passwd", "bad\0adapter"])
def test_adapter_path_that_is_not_an_adapter_is_refused(tmp_path, tiny_model_dir, path):
    cfg = _cfg(tmp_path, tiny_model_dir("llama"))
    cfg["method"]["init_from"] = path
    with pytest.raises(TunewrightError) as err:
        tunewright.train(cfg)
    assert "method.init_from" in str(err.value) and "\n" not in str(err.value)


def _everything_written(root: Path) -> str:
    out = []
    for p in root.rglob("*"):
        if p.is_file():
            out.append(p.read_bytes().decode("latin-1"))
    return "\n".join(out)


def test_env_tokens_never_written_or_printed(tmp_path, tiny_model_dir, monkeypatch, capfd, tally):
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", HF_SECRET)
    monkeypatch.setenv("WANDB_API_KEY", WANDB_SECRET)
    result = tunewright.train(_cfg(tmp_path, tiny_model_dir("llama")))
    written = _everything_written(result.run_dir)
    assert (result.run_dir / "metrics.jsonl").exists() and latest_checkpoint(result.run_dir / "checkpoints")
    console = "".join(capfd.readouterr())
    for secret in (HF_SECRET, WANDB_SECRET):
        assert secret not in written
        assert secret not in console
    assert os.environ["HF_TOKEN"] == HF_SECRET  # the run leaves the user's environment alone
    tally("security canaries")


def test_tokens_inside_paths_are_redacted(tmp_path, tiny_model_dir, capfd, tally):
    """A token pasted into a data path (e.g. a signed URL or a folder named after it) is written and
    printed as `hf_***`, never in clear."""
    secret_dir = tmp_path / HF_SECRET
    secret_dir.mkdir()
    cfg = _cfg(secret_dir, tiny_model_dir("llama"))
    cfg["output"]["dir"] = str(tmp_path / "runs")
    result = tunewright.train(cfg)
    written = _everything_written(result.run_dir)
    console = "".join(capfd.readouterr())
    assert HF_SECRET not in written and HF_SECRET not in console
    assert "hf_***" in (result.run_dir / "config.yaml").read_text()
    tally("security canaries")
