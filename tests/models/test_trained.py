"""Trained folders load for generation: a plain model or a run folder (its final/), an adapter on
its recorded base or on a base given instead, and clear errors for what a folder lacks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.load import load_model, load_tokenizer
from tunewright.models.methods import full, lora
from tunewright.models.trained import load_trained

IDS = torch.tensor([[1, 5, 9, 7, 3]])


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    return tiny_model_dir("llama")


def test_load_trained_plain_folder_and_run_folder(llama, tmp_path):
    model = load_model(ModelConfig(name=llama))
    final = tmp_path / "run" / "final"
    full.save(model, final)
    load_tokenizer(ModelConfig(name=llama)).save_pretrained(final)
    got, tok = load_trained(tmp_path / "run")
    assert not got.training and len(tok) == 565
    assert torch.equal(logits(got), logits(model))


def test_load_trained_adapter_uses_its_base_or_an_override(llama, tmp_path):
    model = lora.apply(load_model(ModelConfig(name=llama)), lora.Config(r=4))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    want = logits(model)
    lora.save(model, tmp_path / "ad")
    (tmp_path / "ad" / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 9], "max_length": 77}))
    got, tok = load_trained(tmp_path / "ad")
    torch.testing.assert_close(logits(got), want, atol=1e-6, rtol=0)
    assert got.get_base_model().generation_config.eos_token_id == [2, 9]
    assert tok.pad_token == "</s>"  # from the base: the adapter folder holds no tokenizer

    shutil.copytree(llama, tmp_path / "moved")
    adapter_cfg = tmp_path / "ad" / "adapter_config.json"
    cfg = json.loads(adapter_cfg.read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    adapter_cfg.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="is not a local folder"):
        load_trained(tmp_path / "ad")
    got, _ = load_trained(tmp_path / "ad", base=str(tmp_path / "moved"))
    torch.testing.assert_close(logits(got), want, atol=1e-6, rtol=0)


def test_load_trained_names_what_a_folder_lacks(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        load_trained(tmp_path / "missing")
    with pytest.raises(ConfigError, match="neither a PEFT adapter"):
        load_trained(tmp_path)
