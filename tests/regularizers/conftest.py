"""Fixtures of the regularizer tests: the loop driven in-process on a real single-process CPU
accelerator."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def accelerator():
    """A fresh single-process CPU `accelerate.Accelerator`, fp32 (another test may have left bf16 set)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=True)


def _examples():
    from tunewright.data.types import Encoded
    g = torch.Generator().manual_seed(0)
    out = []
    for i, n in enumerate([5, 9, 3, 12, 7, 4, 11, 6]):  # unequal lengths, unequal target counts
        ids = torch.randint(5, 400, (n,), generator=g).tolist()
        out.append(Encoded(ids, [-100] * (i % 3) + ids[i % 3:]))
    return out


@pytest.fixture
def loop_train(accelerator):
    """`loop_train(model_dir, micro, steps, regularizers, optimizer=None, log=None)` -> the weights
    after `steps` steps over the same 8 examples in micro-batches of `micro` (SGD, lr 0.5 unless
    `optimizer` builds another; full fine-tuning of a tiny causal LM), with `regularizers` (configs)
    set up at the start, through the loop."""
    from transformers import AutoModelForCausalLM

    from tunewright.config import EvalConfig, TrainConfig
    from tunewright.data.packing import collate_padded
    from tunewright.objectives import causal_lm
    from tunewright.regularizers.hook import setup_regularizers
    from tunewright.training.loop import LoopParts, fit

    def train(model_dir, micro: int, steps: int, regularizers: list, optimizer=None, log: list | None = None):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        examples = _examples()
        batches = [[[e] for e in examples[i:i + micro]] for i in range(0, 8, micro)]
        opt = (optimizer or (lambda ps: torch.optim.SGD(ps, lr=0.5)))(model.parameters())
        parts = LoopParts(model=model, objective=causal_lm, objective_cfg=causal_lm.Config(), optimizer=opt,
                          scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), accelerator=accelerator,
                          plan=lambda epoch: batches, collate=lambda rows: collate_padded([r[0] for r in rows], 0),
                          regularizers=setup_regularizers(regularizers, model, "unused"),
                          log=(lambda step, m: log.append(m)) if log is not None else None)
        fit(parts, TrainConfig(batch_size=8, micro_batch_size=micro, max_grad_norm=None), EvalConfig(),
            total_steps=steps)
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    return train
