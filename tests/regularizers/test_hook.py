"""The regularizer hook as the loop and run.py call it: `penalty` once per optimizer step whatever
the accumulation, `after_step` between the optimizer step and zero_grad, `finish` once per run; the
state saved as safetensors + json in checkpoints and final/ and read back; the penalty counted once
across two gloo processes; every registered regularizer has the documented surface."""

from __future__ import annotations

import json
import types
from typing import Annotated, Literal, Union

import pytest
import torch
from pydantic import Field

from tunewright.config import EvalConfig, RunConfig, TrainConfig
from tunewright.data.packing import collate_padded
from tunewright.errors import ConfigError
from tunewright.objectives import causal_lm
from tunewright.regularizers import REGULARIZERS, l2_sp
from tunewright.regularizers.hook import setup_regularizers
from tunewright.sections import Section
from tunewright.training.loop import LoopParts, fit

# ---------------------------------------------------------------- a regularizer that counts its calls

EVENTS: list[str] = []  # what the loop did, in order: backward, penalty, step, after_step, zero_grad, finish


class CountingConfig(Section):
    name: Literal["counting"] = Field("counting", description="Counts its calls; adds nothing.")
    weight: float = Field(0.0, description="Unused.")


def _setup(model, run_dir, cfg):
    return {"calls": {"penalty": 0, "after_step": 0, "finish": 0}, "finish_batches": 0, "marker": torch.arange(3.0)}


def _penalty(model, state):
    state["calls"]["penalty"] += 1
    EVENTS.append("penalty")
    first = next(p for p in model.parameters() if p.requires_grad)
    return first.sum() * 0.0, {"calls": state["calls"]["penalty"]}  # zero, with a graph: the gradient path runs


def _after_step(model, state):
    state["calls"]["after_step"] += 1
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    EVENTS.append("after_step" if all(g is not None for g in grads) else "after_step without gradients")


def _finish(model, batches, state, loss):
    state["calls"]["finish"] += 1
    on_device = [b for b in batches if b["input_ids"].device == next(model.parameters()).device]
    state["finish_batches"] = len(on_device)
    state["finish_rows"] = [int(b["input_ids"].shape[0]) for b in on_device]
    state["finish_loss"] = float(loss(model, on_device[0]).detach())
    state["causal_lm_loss"] = float(causal_lm.loss(model, on_device[0], causal_lm.Config())[0].detach())
    EVENTS.append("finish")


COUNTING = types.SimpleNamespace(Config=CountingConfig, setup=_setup, penalty=_penalty, after_step=_after_step,
                                 finish=_finish)


@pytest.fixture
def counting(monkeypatch):
    """`counting` registered in REGULARIZERS for this test only."""
    EVENTS.clear()
    monkeypatch.setitem(REGULARIZERS._items, "counting", COUNTING)
    yield COUNTING
    EVENTS.clear()


def _examples():
    from tunewright.data.types import Encoded
    g = torch.Generator().manual_seed(0)
    return [Encoded(ids, ids) for ids in (torch.randint(5, 400, (n,), generator=g).tolist() for n in [5, 9, 3, 12])]


@pytest.mark.parametrize("micro", [1, 4])
def test_penalty_and_after_step_run_once_per_optimizer_step_whatever_the_accumulation(tiny_model_dir, counting,
                                                                                        accelerator, micro):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32)
    examples = _examples()
    batches = [[[e] for e in examples[i:i + micro]] for i in range(0, 4, micro)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.register_step_post_hook(lambda *_: EVENTS.append("step"))
    zero_grad, backward = opt.zero_grad, accelerator.backward
    opt.zero_grad = lambda *a, **k: (EVENTS.append("zero_grad"), zero_grad(*a, **k))[1]
    accelerator.backward = lambda loss: (EVENTS.append("backward"), backward(loss))[1]
    hook = setup_regularizers([CountingConfig()], model, "unused")
    logged = []
    parts = LoopParts(model=model, objective=causal_lm, objective_cfg=causal_lm.Config(), optimizer=opt,
                      scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), accelerator=accelerator,
                      plan=lambda epoch: batches, collate=lambda rows: collate_padded([r[0] for r in rows], 0),
                      regularizers=hook, log=lambda s, m: logged.append(m))
    fit(parts, TrainConfig(batch_size=4, micro_batch_size=micro), EvalConfig(), total_steps=3)
    # per step: every micro-batch's backward, then the penalty once, the step, after_step, zero_grad
    assert EVENTS == (["backward"] * (4 // micro) + ["penalty", "step", "after_step", "zero_grad"]) * 3
    assert hook.members[0].state["calls"] == {"penalty": 3, "after_step": 3, "finish": 0}
    assert [m["reg_counting_calls"] for m in logged] == [1, 2, 3] and [m["reg_counting"] for m in logged] == [0] * 3


def _run_cfg(tmp_path, model_dir, regularizers: list, name: str, **train) -> dict:
    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"{i} " * (1 + i % 3)} for i in range(16)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": {"name": model_dir},
            "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca", "cutoff_len": 64},
            "method": {"name": "lora", "r": 2, "lora_dropout": 0.0}, "regularizers": regularizers,
            "train": {"batch_size": 8, "micro_batch_size": 2, "max_steps": 4, "learning_rate": 0.01, **train},
            "output": {"dir": str(tmp_path / "runs"), "name": name, "save_steps": 2}}


def test_finish_runs_once_per_run_and_the_state_is_in_checkpoints_and_final(tmp_path, tiny_model_dir, counting):
    from safetensors.torch import load_file

    import tunewright

    class WithCounting(RunConfig):  # the schema's union, widened by the test's member
        regularizers: list[Annotated[Union[l2_sp.Config, CountingConfig], Field(discriminator="name")]] = []

    cfg = WithCounting.model_validate(_run_cfg(tmp_path, tiny_model_dir("llama"), [{"name": "counting"}], "counted"))
    result = tunewright.train(cfg)
    assert EVENTS.count("penalty") == EVENTS.count("after_step") == 4
    assert EVENTS.count("finish") == 1 and EVENTS[-1] == "finish"  # once, after the last step
    checkpoint = json.loads((result.run_dir / "checkpoints" / "step-2" / "regularizers" / "counting.json").read_text())
    assert checkpoint["state"]["calls"] == {"penalty": 2, "after_step": 2, "finish": 0}
    final = json.loads((result.final_dir / "regularizers" / "counting.json").read_text())
    assert final["state"]["calls"] == {"penalty": 4, "after_step": 4, "finish": 1}
    assert final["state"]["finish_batches"] == 16  # every row of the epoch, one per batch
    assert final["state"]["finish_rows"] == [1] * 16
    assert final["state"]["finish_loss"] == final["state"]["causal_lm_loss"] > 0  # the run's objective's summed loss
    assert torch.equal(load_file(result.final_dir / "regularizers" / "counting.safetensors")["marker"],
                       torch.arange(3.0))
    assert not list(result.run_dir.rglob("*.pkl"))


# ---------------------------------------------------------------- the state on disk

def test_state_round_trips_through_safetensors_and_json(tmp_path, counting):
    model = torch.nn.Linear(3, 2)
    hook = setup_regularizers([l2_sp.Config(weight=0.5), CountingConfig()], model, tmp_path)
    hook.members[1].state["calls"]["penalty"] = 7
    hook.save(tmp_path / "regularizers")
    assert sorted(p.name for p in (tmp_path / "regularizers").iterdir()) == [
        "counting.json", "counting.safetensors", "l2_sp.json", "l2_sp.safetensors"]

    with torch.no_grad():
        model.weight.add_(1.0)  # a fresh setup would take other θ0: the loaded one must win
    again = setup_regularizers([l2_sp.Config(weight=0.5), CountingConfig()], model, tmp_path)
    again.load(tmp_path / "regularizers")
    for before, after in zip(hook.members, again.members):
        assert before.state.keys() == after.state.keys()
        for key, value in before.state.items():
            if isinstance(value, dict) and all(torch.is_tensor(v) for v in value.values()):
                assert value.keys() == after.state[key].keys()
                assert all(torch.equal(value[k], after.state[key][k]) for k in value)
            elif torch.is_tensor(value):
                assert torch.equal(value, after.state[key])
            else:
                assert value == after.state[key]


def test_a_checkpoint_without_the_state_is_refused_naming_the_regularizer(tmp_path):
    hook = setup_regularizers([l2_sp.Config()], torch.nn.Linear(3, 2), tmp_path)
    with pytest.raises(ConfigError, match=r"holds no state of regularizer 'l2_sp'"):
        hook.load(tmp_path / "step-2" / "regularizers")


def test_no_regularizers_means_no_hook():
    assert setup_regularizers([], torch.nn.Linear(3, 2), "unused") is None


# ---------------------------------------------------------------- every member has the surface

@pytest.mark.parametrize("name", REGULARIZERS.names())
def test_every_regularizer_has_the_documented_surface(name, tmp_path):
    module = REGULARIZERS.get(name)
    assert module.Config.model_fields["name"].default == name
    assert all(f.description for f in module.Config.model_fields.values())
    assert callable(module.setup) and callable(module.penalty)
    assert all(callable(getattr(module, hook)) for hook in ("after_step", "finish") if hasattr(module, hook))
    model = torch.nn.Linear(3, 2)
    state = module.setup(model, tmp_path, module.Config())
    loss, metrics = module.penalty(model, state)
    assert loss.shape == () and torch.isfinite(loss) and loss.requires_grad and isinstance(metrics, dict)


# ---------------------------------------------------------------- two processes: counted once, not per rank

@pytest.mark.slow
def test_two_processes_with_l2_sp_match_one(tmp_path, tiny_model_dir, fork_ranks):
    """With l2_sp on, two gloo processes give the one-process run's losses, penalties and gradient
    norms. A penalty gradient summed over the ranks (or scaled like the data loss by the process
    count) would double it from the second step on: the grad norm and the losses after it differ."""
    from safetensors.torch import load_file

    import tunewright
    from tunewright.training.logging import read_metrics

    regularizers = [{"name": "l2_sp", "weight": 2.0}]

    def main(rank: int, report) -> int:
        result = tunewright.train(_run_cfg(tmp_path, tiny_model_dir("llama"), regularizers, "two"))
        report(json.dumps({"steps": result.steps}))
        return 0

    ranks = fork_ranks(main)
    assert [r.exit_code(timeout=90) for r in ranks] == [0, 0]
    assert [json.loads(r.lines[-1]) for r in ranks] == [{"steps": 4}] * 2
    one = tunewright.train(_run_cfg(tmp_path, tiny_model_dir("llama"), regularizers, "one"))

    two, single = read_metrics(tmp_path / "runs" / "two"), read_metrics(one.run_dir)
    for key in ("loss", "reg_l2_sp", "grad_norm"):
        assert [m[key] for m in two] == pytest.approx([m[key] for m in single], rel=1e-6, abs=1e-12), key
    assert [m["reg_l2_sp"] > 1e-6 for m in single] == [False, True, True, True]  # the penalty had work to do
    a = load_file(one.final_dir / "adapter_model.safetensors")
    b = load_file(tmp_path / "runs" / "two" / "final" / "adapter_model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
