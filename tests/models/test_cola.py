"""ColA (models/methods/cola.py): CPU adapters fitted from (input, hidden-gradient) pairs train exactly as
LoRA from the same start, through the unchanged loop (clipping and schedule included)."""

from __future__ import annotations

import pytest
import torch

from tunewright.config import EvalConfig, TrainConfig
from tunewright.data.packing import collate_padded
from tunewright.data.types import Encoded
from tunewright.errors import ConfigError
from tunewright.models.load import ModelConfig, load_model
from tunewright.models.methods import METHOD_CONFIGS, METHODS, cola
from tunewright.objectives import causal_lm
from tunewright.training.accelerator import make_accelerator
from tunewright.training.loop import LoopParts, fit
from tunewright.training.optim import build_optimizer, build_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")


def _batches():
    g = torch.Generator().manual_seed(0)
    rows = [Encoded(ids, ids) for ids in (torch.randint(5, 400, (n,), generator=g).tolist() for n in (9, 6, 11, 7))]
    return [[[r] for r in rows[i:i + 2]] for i in range(0, 4, 2)]


def _train(model, steps: int = 5):
    """`steps` AdamW steps through the loop (the run's Accelerator, on the CPU), lr warmup then linear decay, gradients clipped at 0.1."""
    cfg = TrainConfig(batch_size=4, micro_batch_size=2, learning_rate=1e-2, warmup_steps=2, max_grad_norm=0.1)
    opt = build_optimizer(model, cfg)
    parts = LoopParts(model=model, objective=causal_lm, objective_cfg=causal_lm.Config(), optimizer=opt,
                      scheduler=build_scheduler(opt, cfg, steps), accelerator=make_accelerator("fp32", cpu=True),
                      plan=lambda epoch: _batches(),
                      collate=lambda rows: collate_padded([r[0] for r in rows], 0))
    return fit(parts, cfg, EvalConfig(), total_steps=steps)


def test_five_adamw_steps_equal_lora_from_the_same_start(tiny_model_dir):
    folder = tiny_model_dir("llama")
    torch.manual_seed(0)
    lora = METHODS.get("lora").apply(load_model(ModelConfig(name=folder)),
                                     METHOD_CONFIGS["lora"](name="lora", r=4, lora_alpha=8, lora_dropout=0.0),
                                     new_token_ids=[])
    model = cola.apply(load_model(ModelConfig(name=folder)), cola.Config(r=4, alpha=8), new_token_ids=[])
    with torch.no_grad():  # the same start, B moved off zero so A learns from the first step
        g = torch.Generator().manual_seed(1)
        for name, module in model.named_modules():
            if isinstance(module, cola.ColaAdapter):
                peft_layer = lora.get_submodule("base_model.model." + name.removesuffix(".cola"))
                module.A.copy_(peft_layer.lora_A["default"].weight)
                module.B.copy_(torch.randn(module.B.shape, generator=g) * 0.05)
                peft_layer.lora_B["default"].weight.copy_(module.B)
    a, b = _train(lora), _train(model)
    assert a.last_metrics["grad_norm"] == pytest.approx(b.last_metrics["grad_norm"], rel=1e-6)
    assert a.last_metrics["grad_norm"] > 0.1  # clipping acted on both: the CPU adapters' gradients enter it
    pairs = 0
    for name, module in model.named_modules():
        if isinstance(module, cola.ColaAdapter):
            peft_layer = lora.get_submodule("base_model.model." + name.removesuffix(".cola"))
            torch.testing.assert_close(module.A, peft_layer.lora_A["default"].weight, atol=1e-6, rtol=0)
            torch.testing.assert_close(module.B, peft_layer.lora_B["default"].weight, atol=1e-6, rtol=0)
            assert module.A.device.type == "cpu"
            pairs += 1
    assert pairs == 4  # q and v in 2 blocks


def test_adapters_stay_on_the_cpu_in_fp32_when_the_model_is_cast(tiny_model_dir):
    model = cola.apply(load_model(ModelConfig(name=tiny_model_dir("llama"))), cola.Config(r=None), new_token_ids=[])
    model.to(torch.bfloat16)
    adapters = [m for m in model.modules() if isinstance(m, cola.ColaAdapter)]
    assert adapters and all(m.D.dtype == torch.float32 and m.D.device.type == "cpu" for m in adapters)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".cola.D" in n for n in trainable)


def test_save_load_and_merge_keep_the_outputs(tiny_model_dir, tmp_path):
    folder = tiny_model_dir("llama")
    model = cola.apply(load_model(ModelConfig(name=folder)), cola.Config(r=4), new_token_ids=[])
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, cola.ColaAdapter):
                m.B.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        base = load_model(ModelConfig(name=folder))(input_ids=ids).logits
        cola.save(model, tmp_path / "a")
        again = cola.load_for_inference(load_model(ModelConfig(name=folder)), tmp_path / "a")
        torch.testing.assert_close(again(input_ids=ids).logits, want, atol=0, rtol=0)
        merged = cola.merge(again)
        assert not any(isinstance(m, cola.ColaAdapter) for m in merged.modules())
        torch.testing.assert_close(merged(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)
    assert (want - base).abs().max() > 1e-3  # the adapter changed the outputs


def test_refused_under_ddp_with_the_reason(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="not supported under DDP yet: each rank would fit its CPU adapters"):
        cola.apply(load_model(ModelConfig(name=tiny_model_dir("llama"))), cola.Config(), new_token_ids=[])
