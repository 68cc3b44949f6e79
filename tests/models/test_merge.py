"""merge_to_folder: base + adapter folded into a plain transformers folder with the same logits; a
method that cannot merge is refused by `tunewright merge` and skipped by `tunewright verify`."""

from __future__ import annotations

import json
import re
import shutil
import types
from typing import Literal

import pytest
import torch
import transformers

from tunewright.config import ModelConfig, load_config
from tunewright.errors import ConfigError, TunewrightError
from tunewright.models.load import load_model, load_tokenizer
from tunewright.models.merge import merge_to_folder
from tunewright.models.methods import METHODS, full, lora
from tunewright.models.params import perturb_trainable
from tunewright.sections import Section

IDS = torch.tensor([[1, 5, 9, 7, 3, 11]])


def logits(model, **kw):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS, **kw).logits


def trained_adapter(base, folder, **kw):
    """An adapter whose B matrices moved off zero (a trained one), saved like a run's final/."""
    model = lora.apply(load_model(ModelConfig(name=base)), lora.Config(**kw))
    perturb_trainable(model, 0.1, seed=3)
    lora.save(model, folder)
    load_tokenizer(ModelConfig(name=base)).save_pretrained(folder)
    return model


@pytest.mark.parametrize("arch, kw", [("llama", dict(r=4)), ("llama", dict(r=4, use_dora=True)),
                                      ("t5", dict(r=4, target_modules=["q", "v"]))])
def test_merged_folder_matches_base_plus_adapter(arch, kw, tiny_model_dir, tmp_path):
    model = trained_adapter(tiny_model_dir(arch), tmp_path / "ad", **kw)
    extra = {"decoder_input_ids": IDS[:, :3]} if arch == "t5" else {}
    want = logits(model, **extra)
    out = merge_to_folder(tmp_path / "ad", tmp_path / "merged")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    assert "adapter_config.json" not in names
    cls = transformers.AutoModelForSeq2SeqLM if arch == "t5" else transformers.AutoModelForCausalLM
    merged = cls.from_pretrained(out)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, **extra), want, atol=1e-4, rtol=0)
    assert not torch.allclose(logits(cls.from_pretrained(tiny_model_dir(arch)), **extra), want, atol=1e-3)


def test_run_folder_base_override_and_saved_generation_config(tiny_model_dir, tmp_path):
    model = trained_adapter(tiny_model_dir("llama"), tmp_path / "run" / "final", r=4)
    (tmp_path / "run" / "final" / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 9]}))
    out = merge_to_folder(tmp_path / "run", tmp_path / "merged", base=tiny_model_dir("llama"))
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [2, 9]
    merged = transformers.AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(logits(merged), logits(model), atol=1e-4, rtol=0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]  # temp folder gone


def test_refuses_a_non_empty_output_folder_and_writes_nothing(tiny_model_dir, tmp_path):
    trained_adapter(tiny_model_dir("llama"), tmp_path / "ad", r=4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="the output folder is not empty"):
        merge_to_folder(tmp_path / "ad", out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    assert (merge_to_folder(tmp_path / "ad", out) / "model.safetensors").is_file()  # empty is fine


# ---------------------------------------------------------------- a method that cannot merge

REASON = "its adapters stay apart by design (a test stub)"


@pytest.fixture
def unmergeable():
    """`stub`: full fine-tuning in every respect but that it cannot merge; registered for one test."""
    class Config(Section):
        name: Literal["stub"] = "stub"

    def merge(model):
        raise AssertionError("merge called on a method that cannot merge")

    stub = types.ModuleType("stub_method")
    stub.Config, stub.merge, stub.CANNOT_MERGE = Config, merge, REASON
    for name in ("apply", "save", "load", "FORMAT", "load_for_inference"):
        setattr(stub, name, getattr(full, name))
    METHODS.register("stub", stub)
    yield stub
    METHODS.unregister("stub")


def test_a_method_that_cannot_merge_is_refused_by_merge_and_skipped_by_verify(unmergeable, tiny_model_dir, tmp_path,
                                                                              capsys):
    from tunewright.cli import main
    from tunewright.verify import run_checks

    folder = tmp_path / "run" / "final"
    shutil.copytree(tiny_model_dir("llama"), folder)
    (folder / "tunewright.json").write_text(json.dumps({"method": "stub"}))
    with pytest.raises(ConfigError, match=re.escape(f"method 'stub' cannot be merged: {REASON}")):
        merge_to_folder(tmp_path / "run", tmp_path / "merged")
    assert main(["merge", str(tmp_path / "run"), "--out", str(tmp_path / "merged")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {folder}: method 'stub' cannot be merged: {REASON}"]
    assert not (tmp_path / "merged").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"Count to {i}.", "output": "1 2 3"[:2 * i]}) + "\n"
                            for i in range(1, 5)))
    cfg = load_config(raw={"model": {"name": tiny_model_dir("llama")}, "output": {"dir": str(tmp_path / "runs")},
                           "data": {"datasets": [{"path": str(rows)}], "template": "alpaca"},
                           "train": {"batch_size": 2, "micro_batch_size": 1}})
    # the schema's method union is fixed at import: put the stub's section in place unvalidated.
    # One example: the accumulation check (the slow one, a real loop step) skips itself
    cfg = cfg.model_copy(update={"method": unmergeable.Config()})
    checks = {c.name: c for c in run_checks(cfg, n_examples=1, resume=False)}
    assert checks["merge"].line() == f"PASS  merge         skipped: not mergeable ({REASON})"


# ---------------------------------------------------------------- dtypes and the parity line

def saved_method(name, base, folder, **kw):
    """A trained-looking folder of method `name` (tensors moved off their start), with the tokenizer."""
    method = METHODS.get(name)
    torch.manual_seed(0)
    model = method.apply(load_model(ModelConfig(name=base)), method.Config(**kw))
    perturb_trainable(model, 0.1, seed=3)
    method.save(model, folder)
    load_tokenizer(ModelConfig(name=base)).save_pretrained(folder)
    return model


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("name, kw", [("lora", {"r": 4}), ("lora", {"r": 4, "use_dora": True}), ("ia3", {})],
                         ids=["lora", "dora", "ia3"])
def test_merge_in_each_dtype_ends_with_a_passing_parity_line(name, kw, dtype, tiny_model_dir, tmp_path):
    model = saved_method(name, tiny_model_dir("llama"), tmp_path / "ad", **kw)
    lines = []
    out = merge_to_folder(tmp_path / "ad", tmp_path / "merged", dtype=dtype, echo=lines.append)
    assert len(lines) == 1 and lines[0].startswith("parity: max |logit diff| merged vs unmerged")
    assert lines[0].endswith(": PASS") and ("limit 1e-03" in lines[0]) == (dtype == "fp32")
    merged = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    want_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert next(merged.parameters()).dtype == want_dtype
    if dtype == "fp32":
        torch.testing.assert_close(logits(merged), logits(model), atol=1e-4, rtol=0)


def test_a_merge_that_changes_the_answers_fails_parity_and_writes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    saved_method("lora", tiny_model_dir("llama"), tmp_path / "ad", r=4)
    monkeypatch.setattr(lora, "merge", lambda model: model.unload())  # drops the adapter instead of folding it in
    lines = []
    with pytest.raises(TunewrightError, match="does not answer as the adapter did .*FAIL.*nothing was written"):
        merge_to_folder(tmp_path / "ad", tmp_path / "merged", echo=lines.append)
    assert lines[0].endswith(": FAIL") and not (tmp_path / "merged").exists()


@pytest.mark.parametrize("name", ["prompt", "prefix", "bottleneck"])
def test_methods_that_cannot_merge_are_refused_with_the_reason(name, tiny_model_dir, tmp_path):
    saved_method(name, tiny_model_dir("llama"), tmp_path / "ad")
    (tmp_path / "ad" / "tunewright.json").write_text(json.dumps({"method": name, "base_model": tiny_model_dir("llama")}))
    with pytest.raises(ConfigError, match=f"method '{name}' cannot be merged: {re.escape(METHODS.get(name).CANNOT_MERGE)}"):
        merge_to_folder(tmp_path / "ad", tmp_path / "merged")
