"""`train.mixed_precision: auto`: chosen per machine, said, recorded, kept by a resume.

The suite runs with TUNEWRIGHT_CPU_BF16=0 (tests/conftest.py), so `auto` is fp32 in every other test;
these tests set it to 1 where they need a CPU on which `auto` picks bf16.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import tunewright
from tunewright.config import load_config
from tunewright.errors import ConfigError
from tunewright.training import precision
from tunewright.training.checkpoint import read_trainer_state
from tunewright.training.precision import cpu_bf16, resolve_precision

sys.path.insert(0, str(Path(__file__).parents[1] / "reliability"))
from processes import tiny_run  # noqa: E402

CPUINFO = "processor\t: 0\nvendor_id\t: X\nflags\t\t: fpu sse2 avx2 {}\nbogomips\t: 1\n"


@pytest.mark.parametrize(("flags", "expected"), [
    ("avx512f amx_tile amx_bf16 amx_int8", "this CPU has amx_bf16"),
    ("avx512f avx512_bf16", "this CPU has avx512_bf16"),
    ("avx512f avx512_vnni", None),  # AVX-512 without its bf16 extension emulates bf16
    ("", None),
])
def test_the_cpu_check_reads_the_kernels_flags(tmp_path, monkeypatch, flags, expected):
    monkeypatch.delenv(precision.ENV)
    (tmp_path / "cpuinfo").write_text(CPUINFO.format(flags))
    assert cpu_bf16(tmp_path / "cpuinfo") == expected


def test_no_cpuinfo_means_no_fast_bf16_and_the_variable_overrides_the_flags(tmp_path, monkeypatch):
    monkeypatch.delenv(precision.ENV)
    assert cpu_bf16(tmp_path / "missing") is None
    (tmp_path / "cpuinfo").write_text(CPUINFO.format("amx_bf16"))
    monkeypatch.setenv(precision.ENV, "0")
    assert cpu_bf16(tmp_path / "cpuinfo") is None
    monkeypatch.setenv(precision.ENV, "1")
    assert cpu_bf16(tmp_path / "missing") == "TUNEWRIGHT_CPU_BF16=1 says this CPU has fast bf16"
    monkeypatch.setenv(precision.ENV, "yes")
    with pytest.raises(ConfigError, match=r"TUNEWRIGHT_CPU_BF16='yes': expected 1 .* or 0"):
        cpu_bf16()


def test_auto_on_the_cpu(monkeypatch):
    monkeypatch.setenv(precision.ENV, "1")
    assert resolve_precision("auto", cpu=True) == ("bf16", "auto: TUNEWRIGHT_CPU_BF16=1 says this CPU has fast bf16")
    monkeypatch.setenv(precision.ENV, "0")
    value, why = resolve_precision("auto", cpu=True)
    assert value == "fp32" and "neither AMX nor AVX512-BF16" in why and "slower than fp32" in why
    for explicit in ("fp32", "bf16", "fp16"):  # an explicit value wins whatever the machine has
        assert resolve_precision(explicit, cpu=True) == (explicit, "as configured")


@pytest.mark.parametrize(("supported", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_cuda_device(monkeypatch, supported, expected):
    import torch
    monkeypatch.setattr(precision, "_cuda_bf16", lambda: supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    value, why = resolve_precision("auto", cpu=False)
    assert value == expected and "Tesla T4" in why


def test_a_resume_keeps_the_checkpoints_precision_or_refuses_with_the_reason(monkeypatch):
    monkeypatch.setenv(precision.ENV, "0")  # this CPU alone would choose fp32
    assert resolve_precision("auto", cpu=True, trained_in="bf16") == (
        "bf16", "auto: the resumed checkpoint was trained in it")
    with pytest.raises(ConfigError, match="trained in fp16, which needs a CUDA GPU"):
        resolve_precision("auto", cpu=True, trained_in="fp16")
    monkeypatch.setattr(precision, "_cuda_bf16", lambda: False)
    with pytest.raises(ConfigError, match="trained in bf16, which this GPU does not support"):
        resolve_precision("auto", cpu=False, trained_in="bf16")


def _weights(folder: Path) -> dict:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_auto_is_said_recorded_and_kept_by_a_bit_exact_bf16_resume(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """A run whose `auto` chose bf16 writes bf16 into config.yaml and its resume key; resumed on a
    machine where `auto` alone would choose fp32, it keeps bf16 and ends bit-identical to the
    uninterrupted run (resume is exact under bf16 too); an explicit fp32 is refused naming the key."""
    model = tiny_model_dir("llama")
    monkeypatch.setenv(precision.ENV, "1")
    cfg = tiny_run(tmp_path, model, "bf", train={"max_steps": 2, "mixed_precision": "auto"}, output={"save_steps": 1})
    straight = tunewright.train(cfg)
    out = capsys.readouterr().out
    assert "precision: bf16 (auto: TUNEWRIGHT_CPU_BF16=1 says this CPU has fast bf16)" in out
    assert yaml.safe_load((straight.run_dir / "config.yaml").read_text())["train"]["mixed_precision"] == "bf16"
    step1 = straight.run_dir / "checkpoints" / "step-1"
    assert read_trainer_state(step1)["resume_key"]["train"]["mixed_precision"] == "bf16"

    cut = tmp_path / "cut"
    shutil.copytree(straight.run_dir, cut / "bf")
    for later in ("checkpoints/step-2", "final"):
        shutil.rmtree(cut / "bf" / later)
    monkeypatch.setenv(precision.ENV, "0")
    resumed_cfg = {**cfg, "train": {**cfg["train"], "resume": "auto"}, "output": {**cfg["output"], "dir": str(cut)}}
    with pytest.raises(ConfigError, match=r"train.mixed_precision \('bf16' -> 'fp32'\)"):
        tunewright.train({**resumed_cfg, "train": {**resumed_cfg["train"], "mixed_precision": "fp32"}})
    capsys.readouterr()
    resumed = tunewright.train(resumed_cfg)
    assert "precision: bf16 (auto: the resumed checkpoint was trained in it)" in capsys.readouterr().out
    a, b = _weights(straight.final_dir), _weights(resumed.final_dir)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_validate_says_which_precision_auto_chose(tmp_path, tiny_model_dir, monkeypatch):
    from typer.testing import CliRunner

    from tunewright.cli import app

    cfg = tiny_run(tmp_path, tiny_model_dir("llama"), "v")
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(cfg))
    for env, line in (("1", "precision: bf16 (auto: TUNEWRIGHT_CPU_BF16=1 says"), ("0", "precision: fp32 (auto: this CPU")):
        monkeypatch.setenv(precision.ENV, env)
        result = CliRunner().invoke(app, ["validate", str(tmp_path / "v.yaml"), "train.mixed_precision=auto"])
        assert result.exit_code == 0, result.output
        assert line in result.output
    assert load_config(raw=cfg).train.mixed_precision == "fp32"  # the fixture pins fp32; auto is the default:
    del cfg["train"]["mixed_precision"]
    assert load_config(raw=cfg).train.mixed_precision == "auto"
