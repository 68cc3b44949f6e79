"""merge_to_folder: base + adapter folded into a plain transformers folder with the same logits."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.load import load_model, load_tokenizer
from tunewright.models.merge import merge_to_folder
from tunewright.models.methods import lora

IDS = torch.tensor([[1, 5, 9, 7, 3, 11]])


def logits(model, **kw):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS, **kw).logits


def trained_adapter(base, folder, **kw):
    """An adapter whose B matrices moved off zero (a trained one), saved like a run's final/."""
    model = lora.apply(load_model(ModelConfig(name=base)), lora.Config(**kw))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
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
