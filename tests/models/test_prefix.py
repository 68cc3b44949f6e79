"""Prefix tuning (models/methods/prefix.py): the KV-cache oracle, the projection's resume, settings."""

from __future__ import annotations

import pytest
import torch

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.load import load_model
from tunewright.models.methods import prefix

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT_IDS = [1, 17, 40, 23, 9]
IDS = torch.tensor([[5, 9, 7, 3, 11, 4], [8, 4, 6, 2, 10, 12]])


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # qwen2: grouped-query attention, biases on q/k/v
def test_a_prefix_set_from_a_texts_kv_cache_reads_as_that_text_first(arch, tiny_model_dir):
    """The oracle: if the prefix is the KV cache of a text, the model must give the base's logits on
    text + input; a prefix peft did not put into every attention, or at the wrong positions, cannot."""
    path = tiny_model_dir(arch)
    base = load_model(ModelConfig(name=path)).eval()
    with torch.no_grad():
        cache = base(input_ids=torch.tensor([TEXT_IDS]), use_cache=True).past_key_values
    want = logits(base, torch.cat([torch.tensor([TEXT_IDS] * 2), IDS], dim=1))[:, len(TEXT_IDS):]
    model = prefix.apply(load_model(ModelConfig(name=path)), prefix.Config(num_virtual_tokens=len(TEXT_IDS)))
    assert not torch.allclose(logits(model, IDS), want, atol=1e-3)  # a random prefix is not the text
    prefix.prefix_from_cache(model, [(layer.keys, layer.values) for layer in cache.layers])
    got = logits(model, IDS)
    assert got.shape == want.shape  # nothing is added to the sequence
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_projection_trains_an_mlp_and_resumes_from_its_own_file(tiny_model_dir, tmp_path):
    path = tiny_model_dir("llama")
    cfg = prefix.Config(num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=16)
    torch.manual_seed(0)
    model = prefix.apply(load_model(ModelConfig(name=path)), cfg)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".transform." in n for n in names) and model.prompt_encoder["default"].transform[0].out_features == 16
    prefix.save(model, tmp_path)
    assert (tmp_path / prefix.ENCODER_FILE).is_file()
    torch.manual_seed(1)
    fresh = prefix.apply(load_model(ModelConfig(name=path)), cfg)
    prefix.load(fresh, tmp_path)
    for (n, a), (_, b) in zip(model.prompt_encoder.named_parameters(), fresh.prompt_encoder.named_parameters()):
        assert torch.equal(a, b), n
    (tmp_path / prefix.ENCODER_FILE).unlink()
    with pytest.raises(ConfigError, match="no prefix_encoder.safetensors"):
        prefix.load(fresh, tmp_path)


def test_encoder_hidden_size_needs_the_projection():
    with pytest.raises(ValueError, match="only with prefix_projection"):
        prefix.Config(encoder_hidden_size=64)
