"""AdamW groups and learning-rate schedules."""

import math

import pytest
import torch

from tunewright.config import TrainConfig
from tunewright.training.optim import build_optimizer, build_scheduler, lr_lambda


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model[0].weight.requires_grad_(True)
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}
    assert sum(len(g["params"]) for g in opt.param_groups) == 4


def test_frozen_parameters_are_not_optimized():
    model = torch.nn.Linear(4, 4)
    model.bias.requires_grad_(False)
    opt = build_optimizer(model, TrainConfig())
    assert [p for g in opt.param_groups for p in g["params"]] == [model.weight]


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_warmup_then_decay(kind):
    cfg = TrainConfig(lr_scheduler=kind, warmup_steps=4, min_lr_ratio=0.1 if kind == "cosine" else 0.0)
    f = lr_lambda(cfg, total_steps=20)
    warm = [f(s) for s in range(4)]
    assert warm == sorted(warm) and warm[-1] < 1.0 and warm[0] > 0
    assert f(4) == pytest.approx(1.0)
    end = f(20)
    expected = {"linear": 0.0, "cosine": 0.1, "constant": 1.0}[kind]  # min_lr_ratio: cosine only (config refuses it elsewhere)
    assert end == pytest.approx(expected)
    if kind == "cosine":
        assert f(12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_warmup_ratio_and_scheduler_steps_lr():
    cfg = TrainConfig(learning_rate=1.0, warmup_ratio=0.5, lr_scheduler="linear")
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = build_scheduler(opt, cfg, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5])


def test_fused_adamw_on_cpu_matches_the_foreach_path():
    """build_optimizer uses the fused AdamW on CPU too (faster); it must update as the foreach path does."""
    torch.manual_seed(0)
    shapes = [(16, 64), (64, 16), (16, 64), (24, 16), (64,)]  # LoRA A/B pairs and a bias
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(s)) for s in shapes])
    reference = [torch.nn.Parameter(p.detach().clone()) for p in model]
    start = [p.detach().clone() for p in model]
    cfg = TrainConfig(weight_decay=0.1, learning_rate=1e-2)
    opt = build_optimizer(model, cfg)
    assert opt.defaults["fused"] is True
    foreach = torch.optim.AdamW([{"params": [r for r in reference if r.ndim > 1], "weight_decay": 0.1},
                                 {"params": [r for r in reference if r.ndim < 2], "weight_decay": 0.0}],
                                lr=1e-2, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, foreach=True)
    for step in range(3):
        for p, r in zip(model, reference):
            p.grad = torch.randn(p.shape) * (step + 1)
            r.grad = p.grad.clone()
        opt.step()
        foreach.step()
    assert max(float((p - r).detach().abs().max()) for p, r in zip(model, reference)) < 1e-6
    assert min(float((p.detach() - s).abs().max()) for p, s in zip(model, start)) > 1e-3  # and the weights moved
