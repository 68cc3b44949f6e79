"""The loop: token-normalized accumulation equals one large batch; bit-exact resume on CPU."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tunewright.config import EvalConfig, TrainConfig
from tunewright.data.packing import collate_padded
from tunewright.data.types import Encoded
from tunewright.objectives import causal_lm
from tunewright.training.loop import LoopParts, fit


class _Accelerator:
    """The single-process CPU surface of accelerate.Accelerator that the loop uses."""

    device = torch.device("cpu")
    num_processes, process_index = 1, 0

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def _examples():
    g = torch.Generator().manual_seed(0)
    out = []
    for i, n in enumerate([5, 9, 3, 12, 7, 4, 11, 6]):  # unequal lengths, unequal target counts
        ids = torch.randint(5, 400, (n,), generator=g).tolist()
        labels = [-100] * (i % 3) + ids[i % 3:]
        out.append(Encoded(ids, labels))
    return out


def _one_step(tiny_model_dir, micro: int, max_grad_norm: float | None = None, result: dict | None = None,
              accelerator=None) -> dict:
    """Weights after one SGD step (lr 1) over the 8 examples in micro-batches of `micro`."""
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32)
    examples = _examples()
    batches = [[[e] for e in examples[i:i + micro]] for i in range(0, 8, micro)]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # SGD: the update is the gradient itself
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    parts = LoopParts(model=model, objective=causal_lm, objective_cfg=causal_lm.Config(), optimizer=opt,
                      scheduler=sched, accelerator=accelerator or _Accelerator(), plan=lambda epoch: batches,
                      collate=lambda rows: collate_padded([r[0] for r in rows], 0))
    out = fit(parts, TrainConfig(batch_size=8, micro_batch_size=micro, max_grad_norm=max_grad_norm), EvalConfig(),
              total_steps=1)
    if result is not None:
        result["metrics"] = out.last_metrics
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_four_micro_batches_of_two_equal_one_batch_of_eight(tiny_model_dir):
    small, large = _one_step(tiny_model_dir, 2), _one_step(tiny_model_dir, 8)
    worst = max(float((small[n] - large[n]).abs().max()) for n in small)
    assert worst < 1e-6
    # and the step moved the weights (a test that cannot fail would pass with no update at all)
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32).state_dict()
    assert max(float((small[n] - base[n]).abs().max()) for n in small) > 1e-4


def test_gradients_are_clipped_to_max_grad_norm(tiny_model_dir):
    """With SGD at lr 1 the update is the gradient: clipped, its global norm is max_grad_norm, and it
    points where the unclipped one does. The logged grad_norm is the norm before clipping."""
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32).state_dict()
    logged: dict = {}
    clipped = _one_step(tiny_model_dir, 4, max_grad_norm=0.5, result=logged)
    free = _one_step(tiny_model_dir, 4)
    update = {n: base[n] - clipped[n] for n in clipped}
    unclipped = {n: base[n] - free[n] for n in free}
    norm = lambda u: float(torch.sqrt(sum((v.double() ** 2).sum() for v in u.values())))  # noqa: E731
    grad_norm = logged["metrics"]["grad_norm"]
    assert grad_norm == pytest.approx(norm(unclipped), rel=1e-5) and grad_norm > 1.0  # clipping has work to do
    assert norm(update) == pytest.approx(0.5, rel=1e-5)
    for n in update:  # differences of fp32 weights: rounded at 1e-7 of the weights
        torch.testing.assert_close(update[n], unclipped[n] * (0.5 / grad_norm), rtol=1e-3, atol=1e-6)


def _cpu_autocasts_fp16() -> str | None:
    """None when this CPU's torch runs matmuls in fp16 under autocast, else why not."""
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            dtype = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    except (RuntimeError, ValueError) as err:
        return f"fp16 autocast refused on this CPU: {err}"
    return None if dtype == torch.float16 else f"fp16 autocast on this CPU computes in {dtype}"


@pytest.mark.skipif(_cpu_autocasts_fp16() is not None, reason=str(_cpu_autocasts_fp16()))
def test_a_step_under_fp16_autocast_is_close_to_fp32(tiny_model_dir):
    """The loop's step with its forward under fp16 autocast (as on a GPU with mixed_precision fp16):
    the matmuls really run in fp16 (10-bit mantissa), the loss and the update stay close to fp32."""
    class _Fp16(_Accelerator):
        def autocast(self):
            return torch.autocast("cpu", dtype=torch.float16)

    seen = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.add(out.dtype) if isinstance(module, torch.nn.Linear) else None)
    try:
        fp16_metrics: dict = {}
        fp16 = _one_step(tiny_model_dir, 4, result=fp16_metrics, accelerator=_Fp16())
    finally:
        hook.remove()
    fp32_metrics: dict = {}
    fp32 = _one_step(tiny_model_dir, 4, result=fp32_metrics)
    assert torch.float16 in seen
    a, b = fp16_metrics["metrics"]["loss"], fp32_metrics["metrics"]["loss"]
    assert a != b and a == pytest.approx(b, rel=1e-2)  # fp16 rounding shows, but only just
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32).state_dict()
    for n in fp32:
        assert torch.isfinite(fp16[n]).all() and fp16[n].dtype == torch.float32, n  # fp32 master weights
        update16, update32 = base[n] - fp16[n], base[n] - fp32[n]
        assert (update16 - update32).abs().max() <= 2e-2 * update32.abs().max() + 1e-6, n


# ---------------------------------------------------------------- end to end: resume is exact

def _data(tmp_path):
    rows = [{"instruction": f"Repeat the word number {i}.", "input": "" if i % 2 else f"word {i}",
             "output": f"number {i} " * (1 + i % 4)} for i in range(40)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(tmp_path, model_dir, method: dict, **over):
    cfg = {"model": {"name": model_dir},
           "data": {"datasets": [{"path": str(_data(tmp_path)), "format": "alpaca"}], "template": "alpaca",
                    "cutoff_len": 64, "val_set_size": 4},
           "method": method,
           "train": {"batch_size": 8, "micro_batch_size": 2, "max_steps": 6, "learning_rate": 1e-2, "seed": 3,
                     "mixed_precision": "fp32"},
           "eval": {"steps": 3},
           "output": {"dir": str(tmp_path / "runs"), "name": "a", "save_steps": 2}}
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v}
    return cfg


def _weights(folder):
    files = sorted(folder.glob("*.safetensors"))
    out = {}
    for f in files:
        out.update(load_file(f))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", [{"name": "lora", "r": 4, "lora_dropout": 0.1}, {"name": "full"}],
                         ids=["lora", "full"])
def test_resume_from_a_checkpoint_is_bit_exact(tmp_path, tiny_model_dir, method):
    from tunewright.run import train
    from tunewright.training.logging import read_metrics

    full = train(_cfg(tmp_path, tiny_model_dir("llama"), method, data={"packing": True}))
    assert full.steps == 6
    # a second run folder cut back to the state right after step 2, then resumed
    cut = tmp_path / "runs" / "b"
    shutil.copytree(full.run_dir, cut)
    for p in ["checkpoints/step-4", "checkpoints/step-6", "final"]:
        shutil.rmtree(cut / p)
    resumed = train(_cfg(tmp_path, tiny_model_dir("llama"), method, data={"packing": True},
                         output={"name": "b"}, train={"resume": "auto"}))
    a, b = _weights(full.final_dir), _weights(resumed.final_dir)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("step_time", "tokens_per_s")} for m in ms]
    assert strip(read_metrics(full.run_dir)) == strip(read_metrics(resumed.run_dir))


# ---------------------------------------------------------------- forward context (models/speed.py)

def test_forward_context_wraps_each_training_forward_once(tiny_model_dir):
    """`LoopParts.forward_context` (activation offloading) is entered around every micro-batch's
    forward, and left before its backward; evaluation runs without it."""
    from contextlib import contextmanager

    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32)
    examples = _examples()
    batches = [[[e] for e in examples[i:i + 2]] for i in range(0, 8, 2)]
    collate = lambda rows: collate_padded([r[0] for r in rows], 0)  # noqa: E731
    events = []

    @contextmanager
    def counting():
        events.append("enter")
        yield
        events.append("exit")

    backward = _Accelerator.backward
    acc = _Accelerator()
    acc.backward = lambda loss: (events.append("backward"), backward(acc, loss))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    parts = LoopParts(model=model, objective=causal_lm, objective_cfg=causal_lm.Config(), optimizer=opt,
                      scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), accelerator=acc,
                      plan=lambda epoch: batches, collate=collate, eval_batches=[collate(batches[0])],
                      forward_context=counting)
    result = fit(parts, TrainConfig(batch_size=4, micro_batch_size=2), EvalConfig(steps=1), total_steps=2)
    # 2 steps x 2 micro-batches, each forward inside the context and its backward after it; the two
    # evaluations added nothing
    assert events == ["enter", "exit", "backward"] * 4
    assert result.step == 2 and result.last_metrics["step_time"] > 0 and "eval_loss" in result.last_metrics


def test_tokens_counted_are_real_tokens_for_padded_and_packed_rows():
    from tunewright.data.packing import collate_packed
    from tunewright.training.loop import _real_tokens

    examples = _examples()[:3]  # 5 + 9 + 3 real tokens
    packed = collate_packed([[examples[0], examples[1]], [examples[2]]], pad_id=0)  # rows of 14 and 3
    assert packed["input_ids"].numel() == 28 and _real_tokens(packed) == 17  # the second row's 11 pads are not work
    assert _real_tokens(collate_padded(examples, 0, side="right")) == 17


class _Counting:
    """causal_lm plus two declared metrics: `hits` (a "mean": target tokens whose id is even, a
    share of all targets) and `rows` (a "sum")."""

    Config, HEAD, UNIT = causal_lm.Config, "causal_lm", "tokens"
    METRICS = {"hits": "mean", "rows": "sum"}
    count = staticmethod(causal_lm.count)

    @staticmethod
    def loss(model, batch, cfg, state=None):
        total, _ = causal_lm.loss(model, batch, cfg)
        targets = batch["labels"][:, 1:]
        hits = ((targets != -100) & (targets % 2 == 0)).sum()
        return total, {"hits": hits, "rows": torch.tensor(batch["labels"].shape[0])}


@pytest.mark.parametrize("micro", [2, 8])
def test_declared_metrics_are_summed_over_micro_batches_then_combined_as_declared(tiny_model_dir, micro):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32)
    examples = _examples()
    batches = [[[e] for e in examples[i:i + micro]] for i in range(0, 8, micro)]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    parts = LoopParts(model=model, objective=_Counting, objective_cfg=causal_lm.Config(), optimizer=opt,
                      scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), accelerator=_Accelerator(),
                      plan=lambda epoch: batches, collate=lambda rows: collate_padded([r[0] for r in rows], 0))
    got = fit(parts, TrainConfig(batch_size=8, micro_batch_size=micro), EvalConfig(), total_steps=1).last_metrics
    targets = [t for e in examples for t in e.labels[1:] if t != -100]
    assert got["rows"] == 8.0
    assert got["hits"] == pytest.approx(sum(t % 2 == 0 for t in targets) / len(targets), rel=1e-12)
    assert got["target_tokens"] == len(targets)
