"""L2-SP: the penalty and its gradient are the hand formula, accumulation does not change the update
with it on, a resumed run pulls toward the same θ0 (bit-exact), and a large weight keeps the weights
near where they started."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tunewright.regularizers import l2_sp
from tunewright.regularizers.hook import setup_regularizers


def _tiny_module() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # frozen: neither in θ0 nor touched
    return model


def test_penalty_and_gradient_equal_the_hand_formula(tmp_path):
    model = _tiny_module()
    hook = setup_regularizers([l2_sp.Config(weight=0.3)], model, tmp_path)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model[1].weight.grad = torch.ones_like(model[1].weight)  # a gradient already there is added to

    penalty, metrics = hook.add_penalty(model)

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    squared = sum(float(((dict(model.named_parameters())[n].detach().double() - start[n].double()) ** 2).sum())
                  for n in trainable)
    assert penalty == pytest.approx(0.3 / 2 * squared, rel=1e-6) and penalty > 0
    assert metrics["reg_l2_sp"] == penalty
    assert metrics["reg_l2_sp_distance"] == pytest.approx(squared ** 0.5, rel=1e-6)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None and name not in hook.members[0].state["theta0"]
            continue
        expected = 0.3 * (p.detach() - start[name]) + (1 if name == "1.weight" else 0)
        torch.testing.assert_close(p.grad, expected, rtol=1e-6, atol=1e-7)


def test_theta0_is_a_copy_taken_at_setup(tmp_path):
    model = _tiny_module()
    state = l2_sp.setup(model, tmp_path, l2_sp.Config(weight=2.0))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert state["weight"] == 2.0
    assert torch.equal(state["theta0"]["0.weight"] + 1.0, model[0].weight)  # not a view of the live weight
    loss, _ = l2_sp.penalty(model, state)
    assert float(loss.detach()) == pytest.approx(2.0 / 2 * model[0].weight.numel(), rel=1e-6)


# ---------------------------------------------------------------- in the loop

def test_four_micro_batches_of_two_equal_one_batch_of_eight_with_l2_sp(tiny_model_dir, loop_train):
    """Two steps (at the first θ = θ0: no penalty yet). A penalty counted per micro-batch would be
    four times as strong with micro-batches of 2; one divided by the target count much weaker."""
    model_dir, on = tiny_model_dir("llama"), [l2_sp.Config(weight=0.5)]
    small_log, large_log = [], []
    small = loop_train(model_dir, 2, 2, on, log=small_log)
    large = loop_train(model_dir, 8, 2, on, log=large_log)
    assert max(float((small[n] - large[n]).abs().max()) for n in small) < 1e-6
    assert small_log[1]["reg_l2_sp"] == pytest.approx(large_log[1]["reg_l2_sp"], rel=1e-6)
    assert small_log[0]["reg_l2_sp"] == 0 and small_log[1]["reg_l2_sp"] > 0
    # Without it, step 1 is the same (θ = θ0) and so is step 2's data gradient (same θ1): the only
    # difference is the penalty's own step, -lr · weight · (θ1 - θ0), once and unscaled
    off_log: list = []
    off = loop_train(model_dir, 8, 2, [], log=off_log)
    start, after_one = loop_train(model_dir, 8, 0, []), loop_train(model_dir, 8, 1, [])
    for n in off:
        torch.testing.assert_close(large[n] - off[n], -0.5 * 0.5 * (after_one[n] - start[n]), rtol=0, atol=2e-6)
    assert max(float((off[n] - large[n]).abs().max()) for n in off) > 1e-3
    assert "reg_l2_sp" not in off_log[-1]
    # `loss` is the objective's alone: at step 1 (θ = θ0) the runs with and without agree exactly
    assert large_log[0]["loss"] == off_log[0]["loss"]


def test_a_large_weight_keeps_the_weights_near_the_start(tiny_model_dir, loop_train):
    from transformers import AutoModelForCausalLM
    model_dir = tiny_model_dir("llama")
    start = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    adam = lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.0)  # noqa: E731
    distance = lambda w: float(torch.sqrt(sum(((w[n] - start[n]) ** 2).sum() for n in w)))  # noqa: E731
    free = distance(loop_train(model_dir, 8, 6, [], optimizer=adam))
    pulled = distance(loop_train(model_dir, 8, 6, [l2_sp.Config(weight=50.0)], optimizer=adam))
    assert pulled < 0.7 * free


# ---------------------------------------------------------------- end to end: θ0 in checkpoints, final/ and resume

def _cfg(tmp_path, model_dir, name: str, **train):
    rows = [{"instruction": f"Repeat the word number {i}.", "input": "", "output": f"number {i} " * (1 + i % 4)}
            for i in range(24)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": {"name": model_dir},
            "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca", "cutoff_len": 64},
            "method": {"name": "lora", "r": 2, "lora_dropout": 0.0},
            "regularizers": [{"name": "l2_sp", "weight": 5.0}],
            "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 4, "learning_rate": 5e-2, "seed": 3,
                      **train},
            "output": {"dir": str(tmp_path / "runs"), "name": name, "save_steps": 2}}


@pytest.mark.slow
def test_resume_with_l2_sp_is_bit_exact_and_theta0_is_saved(tmp_path, tiny_model_dir, monkeypatch):
    from tunewright.run import train
    from tunewright.training.logging import read_metrics

    full = train(_cfg(tmp_path, tiny_model_dir("llama"), "a"))
    # θ0 is the adapter as the run started: LoRA's B starts at zero; the same θ0 in every checkpoint and final/
    theta0 = load_file(full.final_dir / "regularizers" / "l2_sp.safetensors")
    assert theta0 and all(float(t.abs().max()) == 0 for k, t in theta0.items() if "lora_B" in k)
    for step in (2, 4):
        saved = load_file(full.run_dir / "checkpoints" / f"step-{step}" / "regularizers" / "l2_sp.safetensors")
        assert saved.keys() == theta0.keys() and all(torch.equal(saved[k], theta0[k]) for k in saved)
    meta = json.loads((full.final_dir / "regularizers" / "l2_sp.json").read_text())
    assert meta == {"name": "l2_sp", "config": {"name": "l2_sp", "weight": 5.0}, "state": {"weight": 5.0}}
    metrics = read_metrics(full.run_dir)
    assert [m["reg_l2_sp"] > 0 for m in metrics] == [False, True, True, True]

    cut = tmp_path / "runs" / "b"  # the same run cut back to just after step 2, then resumed
    shutil.copytree(full.run_dir, cut)
    for p in ["checkpoints/step-4", "final"]:
        shutil.rmtree(cut / p)
    # The resumed process builds the same seeded adapter, so a θ0 taken again before the weights are
    # loaded would happen to be right here; make it wrong, so only the checkpoint's θ0 gives the same run
    fresh = l2_sp.setup
    monkeypatch.setattr(l2_sp, "setup", lambda model, run_dir, cfg: {
        **fresh(model, run_dir, cfg), "theta0": {k: v + 1 for k, v in fresh(model, run_dir, cfg)["theta0"].items()}})
    resumed = train(_cfg(tmp_path, tiny_model_dir("llama"), "b", resume="auto"))
    a, b = (load_file(run.final_dir / "adapter_model.safetensors") for run in (full, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another θ0 would change reg_l2_sp and the loss from step 3 on
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("step_time", "tokens_per_s")}  # noqa: E731
                        for m in ms]
    assert strip(read_metrics(full.run_dir)) == strip(read_metrics(resumed.run_dir))
