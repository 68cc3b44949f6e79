"""models/speed.py: each switch changes speed or memory, never the numbers. Regional compile and
selective checkpointing give eager's loss and gradients; the offload context is bit-identical on
CPU; the CUDA-only switches (liger, activation_offload) are refused where they cannot run."""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import sys
import time
import types
from contextlib import nullcontext

import pytest
import torch

from tunewright.config import ModelConfig, load_config
from tunewright.errors import ConfigError
from tunewright.models.load import load_model
from tunewright.models.methods import METHOD_CONFIGS, METHODS
from tunewright.models.speed import apply_speedups, blocks, checkpointed_blocks, forward_context
from tunewright.objectives import causal_lm

HAS_CUDA = torch.cuda.is_available()


def _lora_model(model_dir: str, **model_keys):
    """A tiny Llama with LoRA on every linear layer; lora_B random so every adapter gets a gradient."""
    torch.manual_seed(0)
    cfg = ModelConfig(name=model_dir, **model_keys)
    method = METHOD_CONFIGS["lora"](r=4, lora_dropout=0.0)
    model = METHODS.get("lora").apply(load_model(cfg, "causal_lm"), method)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model.train(), cfg


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 400, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _loss_and_grads(model, context=None):
    with context or torch.enable_grad():
        loss, _ = causal_lm.loss(model, _batch(), causal_lm.Config())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


# ---------------------------------------------------------------- compile

@pytest.mark.slow  # ~6 s with a warm inductor cache, ~50 s cold (gcc builds the kernels) on 2 CPU cores
def test_compiled_blocks_match_eager_and_keep_the_state_dict(tiny_model_dir):
    eager, _ = _lora_model(tiny_model_dir("llama"))
    compiled, cfg = _lora_model(tiny_model_dir("llama"), compile=True)
    keys = list(compiled.state_dict())
    apply_speedups(compiled, cfg)
    assert all(b._compiled_call_impl is not None for b in blocks(compiled)) and len(blocks(compiled)) == 2
    assert list(compiled.state_dict()) == keys  # PEFT saving and checkpoints see the same names

    loss_e, grads_e = _loss_and_grads(eager)
    started = time.perf_counter()
    loss_c, grads_c = _loss_and_grads(compiled)
    print(f"first compiled step (compiles both blocks): {time.perf_counter() - started:.1f} s")
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-5)
    assert grads_c.keys() == grads_e.keys() and any("lora_A" in n for n in grads_c)
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-5, atol=1e-5, msg=name)


# ---------------------------------------------------------------- liger

@pytest.mark.skipif(HAS_CUDA and importlib.util.find_spec("liger_kernel") is not None,
                    reason="liger-kernel and CUDA are both here: the error path cannot be reached")
def test_liger_without_its_package_or_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.liger: needs the liger-kernel package and a CUDA GPU"):
        apply_speedups(torch.nn.Linear(2, 2), ModelConfig(liger=True))


@pytest.fixture
def fake_liger(monkeypatch):
    """A stand-in liger_kernel that records the call, on a machine that 'has' CUDA."""
    calls = []
    root = types.ModuleType("liger_kernel")
    root.__spec__ = importlib.machinery.ModuleSpec("liger_kernel", None)
    transformers = types.ModuleType("liger_kernel.transformers")
    transformers._apply_liger_kernel_to_instance = lambda model, **kw: calls.append((model, kw))
    patches = types.ModuleType("liger_kernel.transformers.monkey_patch")
    patches.MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": None, "qwen2": None}
    for module in (root, transformers, patches):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return calls, patches


def test_liger_patches_the_base_model_without_its_cross_entropy(tiny_model_dir, fake_liger):
    calls, patches = fake_liger
    model, _ = _lora_model(tiny_model_dir("llama"))
    assert apply_speedups(model, ModelConfig(liger=True)) is model
    (patched, kwargs), = calls
    assert patched is model.get_base_model()  # Liger reads config.model_type and .model.layers of this one
    assert kwargs == {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                      "fused_linear_cross_entropy": False}
    patches.MODEL_TYPE_TO_APPLY_LIGER_FN = {"qwen2": None}  # an architecture Liger does not know
    with pytest.raises(ConfigError, match=r"model\.liger: liger-kernel has no kernels for model type 'llama'"):
        apply_speedups(model, ModelConfig(liger=True))


# ---------------------------------------------------------------- activation offload

@pytest.mark.skipif(HAS_CUDA, reason="the refusal is for machines without CUDA")
def test_activation_offload_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.activation_offload: needs a CUDA GPU"):
        apply_speedups(torch.nn.Linear(2, 2), ModelConfig(activation_offload=True))


def test_offload_context_leaves_loss_and_gradients_bit_identical(tiny_model_dir):
    # called directly, past apply_speedups' CUDA check: on a CPU the tensors are packed into (unpinned)
    # host copies and unpacked in backward, the same path as on a GPU minus the transfer
    model, cfg = _lora_model(tiny_model_dir("llama"), gradient_checkpointing=True, activation_offload=True)
    make_context = forward_context(cfg)
    assert isinstance(make_context(), torch.autograd.graph.save_on_cpu)
    assert forward_context(ModelConfig()) is nullcontext
    loss_plain, grads_plain = _loss_and_grads(model)
    loss_off, grads_off = _loss_and_grads(model, make_context())
    assert torch.equal(loss_off, loss_plain)
    for name in grads_plain:
        assert torch.equal(grads_off[name], grads_plain[name]), name


# ---------------------------------------------------------------- selective checkpointing

def _recomputed(model) -> list[int]:
    """How many times each block's MLP ran in one forward + backward (the recompute calls the block's
    `forward`, not `__call__`, so a hook on the block itself would not see it)."""
    runs = [0] * len(blocks(model))
    handles = [b.mlp.register_forward_pre_hook(lambda m, a, i=i: runs.__setitem__(i, runs[i] + 1))
               for i, b in enumerate(blocks(model))]
    _loss_and_grads(model)
    for h in handles:
        h.remove()
    return runs


def test_half_the_blocks_checkpointed_give_the_same_loss_and_gradients(tmp_path):
    from tunewright.lab.tiny import make_tiny_model

    four = str(make_tiny_model(tmp_path / "tiny4", "llama", layers=4))
    plain, _ = _lora_model(four)
    selective, cfg = _lora_model(four, gradient_checkpointing=True, checkpoint_layers=0.5)
    assert checkpointed_blocks(selective) == [0, 1, 2, 3]  # load_model checkpoints every block
    apply_speedups(selective, cfg)
    assert checkpointed_blocks(selective) == [0, 2]
    # a checkpointed block runs its forward again in backward, the others once
    assert _recomputed(selective) == [2, 1, 2, 1]

    loss_p, grads_p = _loss_and_grads(plain)
    loss_s, grads_s = _loss_and_grads(selective)
    assert abs(float(loss_s - loss_p)) < 1e-6 * max(1.0, abs(float(loss_p)))
    assert grads_s.keys() == grads_p.keys() and len(grads_p) == 4 * 2 * 2  # A, B of q_proj, v_proj per block
    assert max(float((grads_s[n] - grads_p[n]).abs().max()) for n in grads_p) < 1e-6


def test_checkpoint_layers_without_gradient_checkpointing_is_a_config_error():
    raw = {"data": {"datasets": [{"path": "train.jsonl"}]}, "model": {"checkpoint_layers": 0.5}}
    with pytest.raises(ConfigError, match=r"model\.checkpoint_layers: 0\.5 has no effect without "
                                           r"model\.gradient_checkpointing"):
        load_config(raw=copy.deepcopy(raw))
    raw["model"]["gradient_checkpointing"] = True
    assert load_config(raw=raw).model.checkpoint_layers == 0.5
    with pytest.raises(ConfigError, match="checkpoint_layers"):
        load_config(raw={**raw, "model": {"gradient_checkpointing": True, "checkpoint_layers": 0}})
