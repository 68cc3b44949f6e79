"""Prompt tuning (models/methods/prompt.py): the text-init oracle, its default count, and what the
method refuses."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from tunewright.config import ModelConfig, load_config
from tunewright.errors import ConfigError
from tunewright.models.load import load_model
from tunewright.models.methods import prompt

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "Classify if the tweet is a complaint or no complaint."
IDS = torch.tensor([[5, 9, 7, 3, 11, 4], [8, 4, 6, 2, 10, 12]])


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_text_init_before_training_is_the_base_reading_the_text_first(arch, tiny_model_dir):
    """The oracle: a prompt started from the text's embeddings is the text, so the prompt model's
    logits on x equal the base's on (text tokens + x) at x's positions."""
    path = tiny_model_dir(arch)
    text_ids = AutoTokenizer.from_pretrained(path)(TEXT)["input_ids"]  # as peft tokenizes it (Llama: with BOS)
    base = load_model(ModelConfig(name=path))
    want = logits(base, torch.cat([torch.tensor([text_ids] * 2), IDS], dim=1))[:, len(text_ids):]
    model = prompt.apply(load_model(ModelConfig(name=path)),
                         prompt.Config(prompt_tuning_init="text", prompt_tuning_init_text=TEXT))
    got = logits(model, IDS)
    assert got.shape[1] == len(text_ids) + IDS.shape[1]  # the default count is the text's token count
    torch.testing.assert_close(got[:, len(text_ids):], want, atol=1e-5, rtol=0)
    assert prompt.init_token_ids(model, prompt.Config(prompt_tuning_init="text", prompt_tuning_init_text=TEXT)) \
        == text_ids


def test_text_init_repeats_or_cuts_the_text_to_the_count_given(tiny_model_dir):
    path = tiny_model_dir("llama")
    text = AutoTokenizer.from_pretrained(path)("one two")["input_ids"]
    model = load_model(ModelConfig(name=path))
    for n in (len(text) * 2 + 1, len(text) - 1):
        cfg = prompt.Config(prompt_tuning_init="text", prompt_tuning_init_text="one two", num_virtual_tokens=n)
        assert prompt.init_token_ids(model, cfg) == (text * 3)[:n]


def test_random_init_defaults_to_twenty_virtual_tokens(tiny_model_dir):
    model = prompt.apply(load_model(ModelConfig(name=tiny_model_dir("llama"))), prompt.Config())
    assert model.peft_config["default"].num_virtual_tokens == prompt.RANDOM_TOKENS
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt_encoder.default.embedding.weight"]


def test_config_needs_the_text_with_text_init_and_refuses_it_without():
    with pytest.raises(ValueError, match="needs prompt_tuning_init_text"):
        prompt.Config(prompt_tuning_init="text")
    with pytest.raises(ValueError, match="used only with prompt_tuning_init: text"):
        prompt.Config(prompt_tuning_init_text=TEXT)


@pytest.mark.parametrize("name", ["prompt", "prefix"])
def test_packing_is_refused_with_the_reason(name):
    raw = {"data": {"datasets": [{"path": "x.jsonl"}], "packing": True}, "method": {"name": name}}
    with pytest.raises(ConfigError, match=f"data.packing: not possible with method '{name}': .* once per packed row"):
        load_config(raw=raw)
    load_config(raw={**raw, "data": {"datasets": [{"path": "x.jsonl"}]}})  # unpacked is fine


def test_tokens_the_template_adds_are_refused(tiny_model_dir):
    with pytest.raises(ConfigError, match="prompt cannot train the rows of the 2 tokens the template adds"):
        prompt.apply(load_model(ModelConfig(name=tiny_model_dir("llama"))), prompt.Config(), new_token_ids=[600, 601])
