"""The recorded PEFT comparison's harness (benchmarks/peft_compare.py) on tiny-llama, in-process: the
rows it writes hold what the README table shows, counted the way the rest of tunewright counts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `benchmarks` sits beside src/, outside the installed package

from benchmarks import peft_compare  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_row_is_defined_and_the_smoke_run_records_what_the_table_shows(tmp_path, monkeypatch):
    from tunewright.config import ModelConfig
    from tunewright.models.load import load_model, load_tokenizer

    # every family the issue names is a row
    methods = {(m or {}).get("name") for m, _, _ in peft_compare.ROWS.values()}
    assert methods == {None, "full", "selective", "lora", "prompt", "prefix", "ia3", "bottleneck", "cola"}
    assert {"lora-r4", "lora-r8", "lora-r16", "lora-r32", "lora-r16-qv", "dora-r16", "bitfit", "qlora-r16-qv",
            "lora-r16-qv-adamw8bit", "cola-r16-qv"} <= set(peft_compare.ROWS)
    # the memory rows change what their names say, outside the method section
    qlora = peft_compare.recipe("qlora-r16-qv", peft_compare.SETUPS["smoke"], tmp_path)
    assert qlora["model"]["load_in_4bit"] is True and qlora["method"]["target_modules"] == ["q_proj", "v_proj"]
    assert peft_compare.recipe("lora-r16-qv-adamw8bit", peft_compare.SETUPS["smoke"], tmp_path)["train"]["optimizer"] \
        == "adamw_8bit"

    monkeypatch.setitem(peft_compare.SETUPS, "smoke", {**peft_compare.SETUPS["smoke"], "steps": 1, "n_test": 6,
                                                       "gen_tokens": 2})
    names = ["base", "bitfit", "prompt-text"]
    out = tmp_path / "results" / "cmp"
    rows = peft_compare.run_all(names, "smoke", tmp_path / "work", out, isolate=False)
    assert [r["name"] for r in rows] == names
    by = {r["name"]: r for r in rows}

    assert "bias_only: the selection holds no bias parameters" in by["bitfit"]["skipped"]  # Llama: no biases
    d = load_model(ModelConfig(name="tiny-llama")).config.hidden_size
    n_text = len(load_tokenizer(ModelConfig(name="tiny-llama"))(peft_compare.INIT_TEXT)["input_ids"])
    prompt = by["prompt-text"]
    assert prompt["trainable"] == n_text * d  # one virtual token per init-text token, d values each
    final = tmp_path / "work" / "runs" / "prompt-text" / "final"
    weights = sum(f.stat().st_size for f in final.glob("*.safetensors"))
    assert prompt["checkpoint_bytes"] == weights
    for r in (by["base"], prompt):
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["auc"] <= 1 and r["n_test"] == 6 and r["generate_tokens_per_s"] > 0
    assert by["base"]["trainable"] == 0 and prompt["train_tokens_per_s"] > 0 and prompt["steps"] == 1

    lines = (out.with_suffix(".jsonl")).read_text().splitlines()
    assert json.loads(lines[0])["meta"]["steps"] == 1 and len(lines) == 1 + len(names)
    table = out.with_suffix(".md").read_text()
    assert "| bitfit | selective | biases only | 0.001 | not applicable: method.bias_only" in table
    assert f"| prompt-text | prompt | init {peft_compare.INIT_TEXT!r} | 0.03 | {prompt['trainable']:,} |" in table
