"""Loading: tokenizers, model kinds, dtype and attention, refusing remote code and the offline hub,
activation checkpointing under both transformers names, embedding resize."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.load import (enable_checkpointing, is_checkpointing, load_model, load_tokenizer,
                                    model_head, resize_embeddings)
from tunewright.models.methods import full, lora

IDS = torch.tensor([[1, 5, 9, 7, 3]])


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    return tiny_model_dir("llama")


def test_tokenizer_without_pad_gets_eos_as_pad(llama, tiny_model_dir):
    tok = load_tokenizer(ModelConfig(name=llama))
    assert tok.pad_token == tok.eos_token == "</s>"
    assert load_tokenizer(ModelConfig(name=tiny_model_dir("t5"))).pad_token == "<pad>"  # kept when present


def test_model_head_follows_is_encoder_decoder(llama, tiny_model_dir):
    assert model_head(ModelConfig(name=llama)) == "causal_lm"
    assert model_head(ModelConfig(name=tiny_model_dir("t5"))) == "seq2seq"
    assert type(load_model(ModelConfig(name=tiny_model_dir("t5")))).__name__ == "T5ForConditionalGeneration"


def test_dtype_and_attention_kernel_are_passed_through(llama):
    model = load_model(ModelConfig(name=llama, dtype="bfloat16", attn_implementation="eager"))
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    assert next(load_model(ModelConfig(name=llama)).parameters()).dtype == torch.float32


def test_unknown_attention_kernel_is_a_config_error(llama):
    with pytest.raises(ConfigError, match="^model.attn_implementation: 'bogus'"):
        load_model(ModelConfig(name=llama, attn_implementation="bogus"))


def test_hub_name_while_offline_is_a_clear_config_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = "model.name: 'nobody/no-such-model' is not a local folder and the hub is offline"
    with pytest.raises(ConfigError, match=msg):
        load_model(ModelConfig(name="nobody/no-such-model"))
    with pytest.raises(ConfigError, match=msg):
        load_tokenizer(ModelConfig(name="nobody/no-such-model"))


def test_folders_that_are_not_models_are_named(tmp_path, llama):
    with pytest.raises(ConfigError, match="is a folder without config.json"):
        load_model(ModelConfig(name=str(tmp_path)))
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="is a PEFT adapter, not a model; use method.init_from"):
        model_head(ModelConfig(name=str(tmp_path)))


def test_config_that_needs_remote_code_is_refused_unless_trusted(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "my_custom_lm", "architectures": ["MyCustomLM"],
        "auto_map": {"AutoConfig": "configuration_my.MyConfig", "AutoModelForCausalLM": "modeling_my.MyCustomLM"}}))
    (tmp_path / "configuration_my.py").write_text("raise SystemExit('remote code ran')\n")
    for call in (load_model, model_head):
        with pytest.raises(ConfigError, match="set model.trust_remote_code: true") as err:
            call(ModelConfig(name=str(tmp_path)))
        assert str(err.value).startswith(f"model.name: '{tmp_path}' needs its own model code")


def test_known_architecture_with_auto_map_loads_builtin_code_and_says_so(llama, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(llama, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.X"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="built-in 'llama' implementation"):
        model = load_model(ModelConfig(name=str(folder)))
    assert type(model).__name__ == "LlamaForCausalLM"


def test_gradient_checkpointing_switch(llama):
    model = load_model(ModelConfig(name=llama, gradient_checkpointing=True))
    assert is_checkpointing(model) and model.config.use_cache is False
    assert getattr(model, "_require_grads_hooks", None)  # input grads on, for frozen embeddings
    assert not is_checkpointing(load_model(ModelConfig(name=llama)))


def test_checkpointing_falls_back_to_the_pre_5_23_name():
    class Old(torch.nn.Module):  # transformers 5.17: only gradient_checkpointing_enable exists
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"use_cache": True})()
            self.calls = []

        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
            self.calls.append(gradient_checkpointing_kwargs)

        def enable_input_require_grads(self):
            self._require_grads_hook = object()

    old = Old()
    enable_checkpointing(old)
    assert old.calls == [{"use_reentrant": False}] and old.config.use_cache is False and old._require_grads_hook


def test_resize_embeddings_sets_new_rows_to_the_mean_of_old_rows(llama):
    tok = load_tokenizer(ModelConfig(name=llama))
    model = load_model(ModelConfig(name=llama))
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    rows = old_in.shape[0]
    tok.add_special_tokens({"additional_special_tokens": ["<|a|>", "<|b|>"]})
    inside = 7  # a token id already in the matrix that the caller says is new (a padded vocabulary)
    fresh = resize_embeddings(model, tok, [rows, rows + 1, inside])
    assert fresh == [inside, rows, rows + 1]
    new_in, new_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert new_in.shape[0] == new_out.shape[0] == len(tok) == rows + 2
    keep = [i for i in range(rows) if i != inside]
    for new, old in ((new_in, old_in), (new_out, old_out)):
        for i in fresh:
            torch.testing.assert_close(new[i], old[keep].mean(0))
        assert torch.equal(new[keep], old[keep])
    assert model.config.vocab_size == rows + 2
    assert resize_embeddings(model, tok, []) == []  # nothing new: nothing touched, never shrinks
