"""LoRA's variants (models/methods/lora.py): PiSSA/OLoRA init and their conversion to a plain LoRA,
LoRA+ learning-rate groups (also through a resume with a new learning rate), layers_to_transform."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from peft import PeftModel

from tunewright.config import ModelConfig, TrainConfig, load_config
from tunewright.errors import ConfigError
from tunewright.models.load import load_model
from tunewright.models.methods import lora, param_groups
from tunewright.models.params import perturb_trainable
from tunewright.models.trained import load_trained
from tunewright.training.checkpoint import save_checkpoint
from tunewright.training.optim import build_optimizer, build_scheduler
from tunewright.training.resume import restore

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[1, 5, 9, 7, 3, 11], [1, 8, 4, 6, 2, 10]])


def logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def build(path, **kw):
    torch.manual_seed(0)
    return lora.apply(load_model(ModelConfig(name=path)), lora.Config(**kw))


def perturb(model, scale=0.05):
    perturb_trainable(model, scale, seed=1)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_start_at_the_base_and_save_a_plain_lora_for_the_unmodified_base(init, tiny_model_dir,
                                                                                        tmp_path):
    path = tiny_model_dir("llama")
    base = logits(load_model(ModelConfig(name=path)))
    model = build(path, r=4, lora_dropout=0.0, init_lora_weights=init, target_modules="all-linear")
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.lora_B["default"].weight.abs().sum() > 0  # B is not zero: W itself was split
    torch.testing.assert_close(logits(model), base, atol=1e-4, rtol=0)  # W_res + s B0 A0 = W

    perturb(model)
    trained = logits(model)
    lora.save(model, tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["r"] == 8 and saved["lora_alpha"] == 32 and saved["init_lora_weights"] is True

    # the converted adapter on the unmodified base: plain peft, and tunewright's loader
    plain = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(path), tmp_path)
    torch.testing.assert_close(logits(plain), trained, atol=1e-4, rtol=0)
    ours, _ = load_trained(tmp_path, base=path)
    torch.testing.assert_close(logits(ours), trained, atol=1e-4, rtol=0)
    torch.testing.assert_close(logits(lora.merge(ours)), trained, atol=1e-4, rtol=0)

    # resume: the trained factors are read back out of the converted adapter, exactly
    fresh = build(path, r=4, lora_dropout=0.0, init_lora_weights=init, target_modules="all-linear")
    lora.load(fresh, tmp_path)
    assert torch.equal(logits(fresh), trained)


def test_a_converted_adapter_from_another_start_is_refused_on_resume(tiny_model_dir, tmp_path):
    path = tiny_model_dir("llama")
    model = build(path, r=4, init_lora_weights="pissa")
    lora.save(model, tmp_path)
    other = build(path, r=4, init_lora_weights="olora")
    with pytest.raises(ConfigError, match="was not converted from this model's own PiSSA/OLoRA start"):
        lora.load(other, tmp_path)


def test_pissa_with_dora_is_refused():
    with pytest.raises(ValueError, match="init_lora_weights: pissa cannot be combined with use_dora"):
        lora.Config(init_lora_weights="pissa", use_dora=True)


def _loraplus(path, ratio=16.0, lr=1e-3):
    model = build(path, r=4, loraplus_lr_ratio=ratio)
    train_cfg = TrainConfig(learning_rate=lr, weight_decay=0.1)
    cfg = lora.Config(r=4, loraplus_lr_ratio=ratio)
    return model, build_optimizer(model, train_cfg, param_groups(lora, model, cfg, train_cfg))


def lrs_by_matrix(model, optimizer) -> dict[str, set]:
    names = {id(p): n for n, p in model.named_parameters()}
    found: dict[str, set] = {"lora_A": set(), "lora_B": set()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            found["lora_A" if "lora_A" in names[id(p)] else "lora_B"].add(group["lr"])
    return found


def test_loraplus_puts_b_at_ratio_times_as_learning_rate(tiny_model_dir):
    model, optimizer = _loraplus(tiny_model_dir("llama"))
    assert lrs_by_matrix(model, optimizer) == {"lora_A": {1e-3}, "lora_B": {16e-3}}
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the first group is at train.learning_rate (resume's reference)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.1}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trainable
    plain_model = build(tiny_model_dir("llama"), r=4)
    assert param_groups(lora, plain_model, lora.Config(r=4), TrainConfig()) is None  # no LoRA+: the default groups


def test_a_resume_with_a_new_learning_rate_keeps_the_loraplus_ratio(tiny_model_dir, tmp_path):
    path = tiny_model_dir("llama")
    model, optimizer = _loraplus(path)
    scheduler = build_scheduler(optimizer, TrainConfig(learning_rate=1e-3, lr_scheduler="constant"), 10)
    ckpt = save_checkpoint(tmp_path, 2, save_weights=lambda p: lora.save(model, p), optimizer=optimizer,
                           scheduler=scheduler, trainer_state={"step": 2, "schedule": {"learning_rate": 1e-3}})
    model2, optimizer2 = _loraplus(path)
    scheduler2 = build_scheduler(optimizer2, TrainConfig(learning_rate=1e-3, lr_scheduler="constant"), 10)
    cfg = load_config(raw={"data": {"datasets": [{"path": "-"}]}, "method": {"r": 4, "loraplus_lr_ratio": 16},
                           "train": {"learning_rate": 5e-4, "lr_scheduler": "constant"}})
    restore(ckpt, cfg, lambda p: lora.load(model2, p), optimizer2, scheduler2, 10, say=lambda *a: None)
    found = lrs_by_matrix(model2, optimizer2)
    assert found["lora_A"] == {5e-4} and [b / 5e-4 for b in found["lora_B"]] == [pytest.approx(16)]


def test_layers_to_transform_adapts_the_chosen_blocks_only(tiny_model_dir):
    model = build(tiny_model_dir("llama"), r=2, layers_to_transform=[1])
    blocks = {n.split(".layers.")[1].split(".")[0] for n, p in model.named_parameters() if "lora_" in n}
    assert blocks == {"1"}
    with pytest.raises(ConfigError, match=r"method.layers_to_transform: \[2\] out of range; model.layers has blocks 0-1"):
        build(tiny_model_dir("llama"), r=2, layers_to_transform=[0, 2])
