"""The frozen reference helper: an adapter switched off gives the base model's outputs, a frozen
copy does not move when the trained model does, precomputed values come back by key; none of them
records gradients."""

from __future__ import annotations

import pytest
import torch

from tunewright.config import ModelConfig
from tunewright.models.load import load_model
from tunewright.models.methods import lora
from tunewright.objectives.reference import adapter_disabled, cached, frozen_copy, precompute

IDS = torch.tensor([[1, 5, 9, 7, 3]])


def _logits(model):
    return model(input_ids=IDS).logits


@pytest.fixture
def tuned(tiny_model_dir):
    torch.manual_seed(0)
    base = load_model(ModelConfig(name=tiny_model_dir("llama")))
    with torch.no_grad():
        want = _logits(base.eval())
    model = lora.apply(base, lora.Config(r=4, lora_dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # an adapter that changes the outputs
    return model, want


def test_adapter_disabled_is_the_base_model(tuned):
    model, base_logits = tuned
    ref = adapter_disabled(model)
    got = ref(_logits)
    torch.testing.assert_close(got, base_logits, rtol=0, atol=1e-6)
    assert not got.requires_grad
    assert not torch.allclose(_logits(model), base_logits)  # the adapter is back on afterwards


def test_frozen_copy_stays_where_it_was(tuned):
    model, _ = tuned
    ref = frozen_copy(model)
    before = ref(_logits)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.mul_(2)
    torch.testing.assert_close(ref(_logits), before, rtol=0, atol=0)
    assert not any(p.requires_grad for p in ref.model.parameters())


def test_precomputed_values_by_key(tuned):
    model, _ = tuned
    batches = [{"id": 0, "ids": IDS}, {"id": 1, "ids": IDS[:, :3]}]
    ref = precompute(adapter_disabled(model), batches, key_of=lambda b: b["id"],
                     fn=lambda m, b: m(input_ids=b["ids"]).logits.sum())
    assert set(ref.values) == {0, 1} and float(ref.lookup(1)) == pytest.approx(
        float(adapter_disabled(model)(lambda m: m(input_ids=IDS[:, :3]).logits.sum())))


def test_cached_values_are_stored_once_and_read_back_bit_for_bit(tuned, tmp_path):
    from tunewright.objectives import reference
    model, _ = tuned
    calls = []

    def compute():
        calls.append(1)
        return {7: torch.randn(2), 9: torch.randn(2)}

    before = dict(reference.COUNTERS)
    first = cached(tmp_path, model, {"rows": [7, 9]}, compute)
    again = cached(tmp_path, model, {"rows": [7, 9]}, compute)
    assert len(calls) == 1 and first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert reference.COUNTERS["hits"] == before["hits"] + 1
    # other rows, or other weights: computed afresh, never the stored values
    cached(tmp_path, model, {"rows": [7]}, compute)
    weight = next(p for p in model.parameters())
    with torch.no_grad():
        weight.add_(1e-3)
    cached(tmp_path, model, {"rows": [7, 9]}, compute)
    assert len(calls) == 3
    # a damaged entry is recomputed, not trusted
    for f in (tmp_path / "reference").glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    cached(tmp_path, model, {"rows": [7, 9]}, compute)
    assert len(calls) == 4
    assert cached(None, model, {}, compute) and len(calls) == 5  # no cache folder: nothing stored
