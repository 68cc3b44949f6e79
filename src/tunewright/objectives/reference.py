"""A frozen reference model for objectives that compare the trained model with one: DPO's and KTO's
reference policy, PPO's KL anchor, distillation's teacher, LwF's previous model. An objective's
`setup(model, cfg)` makes one, and its `loss` asks it for outputs, always without gradients.

Three ways, one interface (`reference(fn) -> fn(model) under no_grad`), chosen by what memory allows:

    adapter_disabled(model)   the trained model with its PEFT adapter switched off: the base weights
                              are the reference, no memory at all (LoRA-family methods only)
    frozen_copy(model)        a deep copy in eval mode, every parameter frozen: one more model in
                              memory (full or selective fine-tuning)
    frozen(model)             a model loaded apart (distillation's teacher), frozen in eval mode
    precomputed(values)       outputs computed once before training (e.g. reference log-probs per
                              example, see `precompute`), kept in a dict: no model kept at all

Whichever is used, the reference never changes during the run. run.py calls `setup` before a
resume restores the trained weights, so a frozen copy is of the starting model after a resume too.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Callable

import torch

__all__ = ["Reference", "adapter_disabled", "frozen_copy", "frozen", "precomputed", "precompute"]


class Reference:
    """`ref(fn)` -> fn(reference model) under no_grad; `ref.lookup(key)` for precomputed values."""

    def __init__(self, model=None, context: Callable | None = None, values: dict | None = None):
        self.model, self._context, self.values = model, context or nullcontext, values

    def __call__(self, fn):
        if self.model is None:
            raise ValueError("this reference holds precomputed values only: use lookup(key)")
        was_training = self.model.training
        self.model.eval()  # dropout off: the reference is deterministic
        try:
            with torch.no_grad(), self._context():
                return fn(self.model)
        finally:
            self.model.train(was_training)

    def lookup(self, key):
        return self.values[key]


def adapter_disabled(model) -> Reference:
    """The base model under `model`'s PEFT adapter (peft's `disable_adapter` context)."""
    if not hasattr(model, "disable_adapter"):
        raise ValueError("adapter_disabled needs a PEFT model (method.name: lora or another adapter); "
                         "use frozen_copy for full or selective fine-tuning")
    return Reference(model, model.disable_adapter)


def frozen_copy(model) -> Reference:
    """A deep copy of `model` as it is now, frozen."""
    copied = copy.deepcopy(model)
    for p in copied.parameters():
        p.requires_grad_(False)
    return Reference(copied.eval())


def frozen(model) -> Reference:
    """`model` itself (loaded for this purpose, not shared with training), every parameter frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    return Reference(model.eval())


def precomputed(values: dict) -> Reference:
    return Reference(values=dict(values))


def precompute(reference: Reference, batches, key_of: Callable, fn: Callable) -> Reference:
    """Run `fn(model, batch)` of `reference` once over `batches` and keep each output under
    `key_of(batch)`: the reference model can then be dropped."""
    values = {}
    for batch in batches:
        values[key_of(batch)] = reference(lambda model: fn(model, batch))
    return precomputed(values)
