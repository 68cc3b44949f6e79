"""Bottleneck adapters (models/methods/bottleneck.py): a hand-written reference block, the trainable
count on the default model's shape, placement and layers, and loading without peft."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import transformers

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.inspect import inspect_counts
from tunewright.models.load import load_model
from tunewright.models.methods import bottleneck
from tunewright.models.params import perturb_trainable
from tunewright.models.saved import saved_format
from tunewright.models.trained import load_trained

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[1, 5, 9, 7, 3, 11], [1, 8, 4, 6, 2, 10]])


def build(path, **kw):
    torch.manual_seed(0)
    return bottleneck.apply(load_model(ModelConfig(name=path)), bottleneck.Config(**kw))


def perturb(model, seed=1):
    perturb_trainable(model, 0.1, seed=seed)


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def by_hand(adapter, h):
    """h + W_up act(W_down h + b_down) + b_up, written out (the module is only read for its tensors)."""
    hidden = F.linear(h, adapter.down.weight, adapter.down.bias)
    hidden = {torch.nn.ReLU: F.relu, torch.nn.SiLU: F.silu}[type(adapter.act)](hidden)
    return h + F.linear(hidden, adapter.up.weight, adapter.up.bias)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_an_adapted_block_equals_a_hand_written_reference(placement, arch, tiny_model_dir):
    """The block by hand: x + attn(norm(x)) [+ adapter], then + mlp(norm(h)) + adapter. `.forward`
    calls the sublayers without their hooks, so the reference cannot lean on the code under test."""
    model = build(tiny_model_dir(arch), placement=placement, non_linearity="silu").eval()
    perturb(model)  # W_up starts at zero, which would hide the adapter
    block = model.model.layers[1]
    x = torch.randn(2, 6, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(6)[None].expand(2, -1)
    pe = model.model.rotary_emb(x, positions)
    with torch.no_grad():
        out = block(x, position_embeddings=pe, attention_mask=None, position_ids=positions)
        out = out[0] if isinstance(out, tuple) else out
        a = block.self_attn.forward(block.input_layernorm(x), position_embeddings=pe, attention_mask=None)[0]
        if placement == "houlsby":
            a = by_hand(block.self_attn.bottleneck, a)
        else:
            assert not hasattr(block.self_attn, "bottleneck")
        h = x + a
        want = h + by_hand(block.mlp.bottleneck, block.mlp.forward(block.post_attention_layernorm(h)))
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("placement, count", [("pfeiffer", 1_262_520), ("houlsby", 2_525_040)])
def test_trainable_count_on_the_default_models_shape(placement, count, tmp_path):
    """SmolLM2-135M's shape (d=576, 30 blocks): m = 576 / 16 = 36; one adapter is down 576x36 + 36 and
    up 36x576 + 576 = 42,084 parameters, times 30 blocks (pfeiffer) or 60 sublayers (houlsby).
    Counted on the meta device, as `tunewright inspect` does."""
    transformers.LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                             num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True
                             ).save_pretrained(tmp_path)
    trainable, total = inspect_counts(str(tmp_path), bottleneck.Config(placement=placement, reduction_factor=16))
    assert trainable == count
    assert total - trainable == 134_515_008  # the base, unchanged


def test_up_projection_starts_at_zero_so_the_model_starts_as_the_base(tiny_model_dir):
    path = tiny_model_dir("llama")
    model = build(path, placement="houlsby")
    assert torch.equal(logits(model), logits(load_model(ModelConfig(name=path))))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".bottleneck." in n for n in names)


def test_layers_k_adapts_only_the_last_k_blocks(tiny_model_dir):
    model = build(tiny_model_dir("llama"), layers=1)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {f"model.layers.1.mlp.bottleneck.{m}.{t}" for m in ("down", "up") for t in ("weight", "bias")}
    with pytest.raises(ConfigError, match="method.layers: 3 but model.layers has only 2 blocks"):
        build(tiny_model_dir("llama"), layers=3)


def test_saved_adapter_loads_without_peft_or_a_run_record(tiny_model_dir, tmp_path):
    path = tiny_model_dir("llama")
    model = build(path, layers=1, reduction_factor=8)
    perturb(model)
    want = logits(model)
    bottleneck.save(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bottleneck.safetensors", "tunewright_adapter.json"]
    settings = json.loads((tmp_path / "tunewright_adapter.json").read_text())
    assert settings["layers"] == [1] and settings["reduction_factor"] == 8 and saved_format(tmp_path) == "BOTTLENECK"
    loaded, _ = load_trained(tmp_path)  # the base from the settings' base_model_name_or_path
    torch.testing.assert_close(logits(loaded), want, atol=1e-6, rtol=0)
    assert not any(type(m).__module__.startswith("peft") for m in loaded.modules())


def test_a_deep_copy_runs_its_own_adapters(tiny_model_dir):
    """The hooks find the adapter through the module they are called on: a copy (a frozen reference
    model, verify's checks) must not run the original's adapters."""
    import copy

    model = build(tiny_model_dir("llama"))
    twin = copy.deepcopy(model)
    perturb(model)
    assert not torch.equal(logits(model), logits(twin))


def test_loading_onto_another_architecture_is_refused(tiny_model_dir, tmp_path):
    bottleneck.save(build(tiny_model_dir("llama")), tmp_path)
    other = load_model(ModelConfig(name=tiny_model_dir("qwen2")))
    with pytest.raises(ConfigError, match="different architecture: its base has model_type='llama'"):
        bottleneck.load_for_inference(other, tmp_path)
