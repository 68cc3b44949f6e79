"""Every registered method, trained for real on tiny Llama and tiny Qwen2 (tied head): what it must
hold whatever it is. Frozen weights stay bit-identical, gradients reach only the method's
parameters, the loss falls by 20% in 30 steps on 8 fixed examples, the trained logits differ from
the base, save -> reload gives the logits back, a resume through `save`/`load` and the optimizer's
state is bit-exact, and a PEFT-type adapter loads with plain `PeftModel.from_pretrained`.

The steps go through the causal-LM objective's loss (objectives/causal_lm.py) and the run's
optimizer builder with the method's own groups, as `tunewright train` does."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from peft import PeftModel

from tunewright.config import ModelConfig, TrainConfig
from tunewright.models.load import load_model
from tunewright.models.methods import METHODS, param_groups
from tunewright.models.saved import PLAIN, saved_format
from tunewright.objectives import causal_lm
from tunewright.training.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

# one config per registered method (dropout off: the resume comparison is of weights alone) and
# the learning rate it trains at: prompt-style methods move few, large-scale parameters
CASES = {
    "full": ({}, 1e-3),
    "selective": ({"last_k_layers": 1}, 1e-3),
    "lora": ({"r": 4, "lora_dropout": 0.0, "target_modules": "all-linear"}, 1e-2),
    "ia3": ({}, 5e-2),
    "prompt": ({"num_virtual_tokens": 4}, 5e-2),
    "prefix": ({"num_virtual_tokens": 4}, 5e-2),
    "bottleneck": ({"placement": "houlsby", "reduction_factor": 4}, 1e-2),
    "cola": ({"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]}, 1e-2),
}
ARCHS = ["llama", "qwen2"]


def test_every_registered_method_has_a_case():
    assert sorted(CASES) == METHODS.names()


def examples() -> dict:
    """8 fixed rows of 12 tokens, each a cycle through 4 ids from a different start: learnable
    from the token statistics alone, so any method that can move the output learns something."""
    ids = torch.tensor([[10 + (start + t) % 4 for t in range(12)] for start in range(8)])
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def build(path, name):
    method = METHODS.get(name)
    kwargs, _ = CASES[name]
    torch.manual_seed(0)
    return method, method.apply(load_model(ModelConfig(name=path)), method.Config(**kwargs))


def optimizer_for(method, model, name):
    train_cfg = TrainConfig(learning_rate=CASES[name][1])
    return build_optimizer(model, train_cfg, param_groups(method, model, method.Config(**CASES[name][0]), train_cfg))


def step(model, optimizer, batch) -> float:
    """One optimizer step on the mean loss per target token; returns that loss."""
    model.train()
    total, _ = causal_lm.loss(model, batch, causal_lm.Config())
    loss = total / causal_lm.count(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def logits(model, batch):
    """[B, T, vocab] at the input's own positions (prompt tuning's output starts with its virtual tokens')."""
    model.eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return out[:, -batch["input_ids"].shape[1]:]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Tiny models with weights at std 0.1: at the default 0.02 the frozen 64-wide head caps how far
    any method that leaves it frozen can move the logits (lab/tiny.py)."""
    from tunewright.lab.tiny import make_tiny_model

    return {arch: str(make_tiny_model(tmp_path_factory.mktemp(f"learnable_{arch}"), arch, initializer_range=0.1))
            for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_training_moves_only_the_method_and_lowers_the_loss(name, arch, paths):
    batch = examples()
    base_logits = logits(load_model(ModelConfig(name=paths[arch])), batch)
    method, model = build(paths[arch], name)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and (name == "full") == (not frozen)
    optimizer = optimizer_for(method, model, name)

    # gradients: every trainable tensor gets one (after a step: LoRA's A has none while B is 0), no frozen one
    step(model, optimizer, batch)
    model.train()
    (causal_lm.loss(model, batch, causal_lm.Config())[0]).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == trainable
    optimizer.zero_grad(set_to_none=True)

    losses = [step(model, optimizer, batch) for _ in range(29)]
    with torch.no_grad():
        first = causal_lm.loss(build(paths[arch], name)[1], batch, causal_lm.Config())[0].item() / causal_lm.count(batch)
    assert losses[-1] <= 0.8 * first, (first, losses[-1])
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert (logits(model, batch) - base_logits).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_save_reload_resume_and_plain_peft_load(name, arch, paths, tmp_path):
    batch = examples()
    method, model = build(paths[arch], name)
    optimizer = optimizer_for(method, model, name)
    for _ in range(2):
        step(model, optimizer, batch)
    method.save(model, tmp_path)
    saved_optimizer = copy.deepcopy(optimizer.state_dict())  # the live state changes in place
    trained = logits(model, batch)
    straight = [step(model, optimizer, batch) for _ in range(2)]
    after = {n: p.detach().clone() for n, p in model.named_parameters()}

    # save -> a fresh model, the method applied again, `load` -> the same logits
    method2, fresh = build(paths[arch], name)
    method2.load(fresh, tmp_path)
    torch.testing.assert_close(logits(fresh, batch), trained, atol=1e-6, rtol=0)

    # resume: the optimizer's state as well, then the same two steps, bit for bit
    optimizer2 = optimizer_for(method2, fresh, name)
    optimizer2.load_state_dict(saved_optimizer)
    assert [step(fresh, optimizer2, batch) for _ in range(2)] == straight
    for n, p in fresh.named_parameters():
        assert torch.equal(p, after[n]), n

    # a PEFT-type adapter is peft's own format: plain peft loads it onto the plain base
    if saved_format(tmp_path) in ("LORA", "IA3", "PROMPT_TUNING", "PREFIX_TUNING"):
        plain = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(paths[arch]), tmp_path)
        torch.testing.assert_close(logits(plain, batch), trained, atol=1e-6, rtol=0)
    else:
        assert saved_format(tmp_path) in (PLAIN, "BOTTLENECK", "COLA")
