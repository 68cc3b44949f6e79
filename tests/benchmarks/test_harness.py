"""The benchmark harness (benchmarks/): its bookkeeping in-process, and the CI suite end to end on a
tiny model (fresh processes, both systems), so the CPU and GPU suites run the code tested here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `benchmarks` sits beside src/, outside the installed package

from benchmarks import measure, report, run, workloads  # noqa: E402


def test_flops_per_token_convention():
    # 4*N_matmul + 12*L*d*s + 6*N_lora: 4*1000 + 12*2*8*16 + 6*10
    assert measure.flops_per_token(1000, 2, 8, 16, 10) == 4000 + 3072 + 60


def test_matmul_params_counts_linears_not_embeddings_or_adapters(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"))
    expected = sum(m.weight.numel() for m in model.modules() if isinstance(m, __import__("torch").nn.Linear))
    assert measure.matmul_params(model) == expected
    assert expected < sum(p.numel() for p in model.parameters())  # the embedding is left out
    wrapped = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    assert measure.matmul_params(wrapped) == expected  # base_layer counted, lora_A/lora_B not


def test_varlen_lengths_are_lognormal_around_the_median():
    lengths = workloads.varlen_lengths(4000, seed=0)
    median = sorted(lengths)[len(lengths) // 2]
    assert 230 <= median <= 270 and max(lengths) <= workloads.VARLEN_MAX and min(lengths) >= 16
    assert workloads.varlen_lengths(50, seed=1) == workloads.varlen_lengths(50, seed=1)


def _record(group, label, tps, loss=2.0, norm=1.0, **extra):
    return {"id": f"{group}/{label}", "group": group, "label": label, "status": "ok", "tokens_per_s": tps,
            "loss_step1": loss, "grad_norm_step1": norm, "loss_step_k": loss - 0.5, "k_step": 3,
            "peak_rss_gib": 1.0, "mfu": 0.1, **extra}


def test_report_ratios_parity_and_reruns(tmp_path):
    rows = [_record("g", "B0", 100.0), _record("g", "B1", 125.0),
            _record("g", "ours", 200.0, loss=2.002, norm=1.01, parity=True),
            {"id": "g/ours best", "group": "g", "label": "ours best", "status": "oom", "error": "CUDA out of memory"}]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [_record("g", "B0", 1.0)] + rows))
    records = report.read(path)
    assert len(records) == 4  # the re-run of g/B0 replaced the first
    text = report.markdown(records, "t", "cmd")
    ours_line = next(line for line in text.splitlines() if "| ours |" in line)
    assert "| 2.00× | 1.60× |" in ours_line
    assert "oom: CUDA out of memory" in text
    (check,) = report.parity(records)
    assert check["loss_rel"] == pytest.approx(0.001) and check["grad_norm_rel"] == pytest.approx(0.01)


def test_best_against_best_table_and_bf16_twins():
    rows = [_record("g", "B0", 100.0, system="hf", settings="ckpt"),
            _record("g", "B0 bf16", 140.0, system="hf", settings="bf16", twin="B0", loss=2.03),
            _record("g", "ours", 175.0, system="ours", settings="fp32"),
            _record("g", "ours bf16", 90.0, system="ours", settings="bf16", twin="ours", loss=2.01),
            _record("h", "B0", 50.0, system="hf", settings="ckpt"),
            _record("h", "ours", 80.0, system="ours", settings="packed"),
            _record("k", "B0", 50.0, system="hf", settings="ckpt"),
            _record("k", "B1", 70.0, system="hf_liger", settings="liger"),  # Trainer's fastest is with Liger
            _record("k", "ours", 84.0, system="ours", settings="packed")]
    text = report.markdown(rows, "t", "cmd")
    # B0 best is Trainer's fastest row (bf16 here), not B0: 175 / 140 = 1.25, short of 1.5
    assert "| g | 140.0 (bf16) | 175.0 (fp32) | **1.25×** | 1.5×: missed |" in text
    assert "| h | 50.0 (ckpt) | 80.0 (packed) | **1.60×** | 1.5×: met |" in text
    assert "| k | 70.0 (liger) | 84.0 (packed) | **1.20×** | 1.5×: missed |" in text
    assert text.index("fastest setting") < text.index("| group | row |")  # the best table leads
    checks = {c["label"]: c for c in report.twins(rows)}
    assert checks["B0 bf16"]["loss_rel"] == pytest.approx(0.015) and checks["ours bf16"]["loss_rel"] == pytest.approx(0.005)
    assert "B0 bf16 vs B0: 1.50e-02 (outside)" in text and "ours bf16 vs ours: 5.00e-03 (within)" in text


def test_best_that_fits_takes_the_first_candidate_that_does_not_run_out_of_memory(monkeypatch):
    seen = []

    def fake_spawn(command, spec, timeout):
        seen.append(spec["settings"])
        return {"status": "oom"} if spec["settings"] == "fast" else {"status": "ok", "tokens_per_s": 1.0}

    monkeypatch.setattr(run, "_spawn", fake_spawn)
    result = run.run_spec({"id": "g/x", "label": "x", "settings": "best", "candidates": [
        {"settings": "fast"}, {"settings": "lean"}, {"settings": "leanest"}]}, timeout=1)
    assert seen == ["fast", "lean"] and result["settings"] == "lean"
    assert result["tried"] == ["fast: oom", "lean: ok"]


def test_probe_stops_at_the_first_failure(monkeypatch):
    monkeypatch.setattr(run, "run_spec", lambda spec, timeout: {"status": "ok" if spec["seq"] <= 8192 else "oom"})
    result = run.probe({"label": "ours", "system": "ours", "settings": "s", "memory_cap_gib": 40},
                       [4096, 8192, 16384, 32768], timeout=1)
    assert result["longest"] == 8192 and result["oom_at"].startswith("16384")


def test_a_probe_only_table_names_its_command_and_device():
    probes = [{"id": "probe/ours", "probe": True, "label": "ours", "longest": 8192, "oom_at": "16384 (oom)",
               "memory_cap_gib": 40, "status": "ok", "command": "python -m benchmarks.run --suite gpu-context",
               "env": {"device": "NVIDIA H200", "torch": "2.11"}}]
    text = report.markdown(probes, "t", "cmd")
    assert "`python -m benchmarks.run --suite gpu-context`" in text and "Device: NVIDIA H200; torch 2.11" in text
    assert "- ours: 8192 tokens (cap 40 GiB; OOM at 16384 (oom))" in text


@pytest.mark.slow
def test_ci_suite_end_to_end(tmp_path):
    """Fresh processes for B0 (Trainer + PEFT) and ours on identical rows: both train, the table has
    the ratios, and step 1 agrees to float32 precision (same weights, rows and adapter init)."""
    out = tmp_path / "results"
    code = run.main(["--suite", "ci", "--out", str(out), "--workdir", str(tmp_path / "work"), "--timeout", "600"])
    assert code == 0
    records = {r["id"]: r for r in report.read(out / "ci.jsonl")}
    assert set(records) == {s["id"] for s in run.suite("ci")}
    assert all(r["status"] == "ok" for r in records.values()), records
    for r in records.values():
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["peak_rss_gib"] > 0
        assert r["env"]["transformers"] and len(r["losses"]) == 3
    (dense,) = [c for c in report.parity(list(records.values())) if c["group"] == "tiny dense 64x4"]
    assert dense["loss_rel"] < 1e-5 and dense["grad_norm_rel"] < 1e-4
    packed = records["tiny varlen/ours, packed"]
    assert 0.75 * 512 < packed["step_tokens_median"] <= 512  # one packed row per step, nearly full
    text = (out / "ci.md").read_text()
    assert "| tiny dense 64x4 | ours, same flags |" in text and "×B0" in text


def test_only_selects_by_part_or_by_end_of_the_id():
    ids = ["g/B0", "g/B0 best", "g/ours", "g/ours best"]
    assert [i for i in ids if run._chosen(i, ["/B0"])] == ["g/B0", "g/B0 best"]
    assert [i for i in ids if run._chosen(i, ["/ours$", "/B0$"])] == ["g/B0", "g/ours"]
    assert all(run._chosen(i, []) for i in ids)
