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
                              example, see `precompute`), kept in a dict: no model kept at all;
                              `cached` keeps them on disk beside the tokenized rows, so a second run
                              on the same model and data, or a resume, reads them instead of rerunning

Whichever is used, the reference never changes during the run. run.py calls `setup` before a
resume restores the trained weights, so a frozen copy is of the starting model after a resume too.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

__all__ = ["Reference", "adapter_disabled", "frozen_copy", "frozen", "precomputed", "precompute", "cached",
           "weights_fingerprint", "COUNTERS"]

log = logging.getLogger(__name__)
COUNTERS = {"hits": 0, "misses": 0}  # this process's use of the precomputed-values cache, for tests


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


def weights_fingerprint(model) -> str:
    """A hash of every tensor of `model`'s state dict (name, dtype, shape, bytes): values computed
    from the model are reusable exactly when this is unchanged. One pass over the weights (~1 s for
    a 135M model), far less than a forward pass over the training set."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        if t.device.type == "meta":
            continue
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cached(folder: str | Path | None, model, parts: dict, compute: Callable[[], dict]) -> dict:
    """`compute()`'s {int key: tensor} values, stored in `folder`/reference/ under the reference
    model's `weights_fingerprint` and `parts` (what else decides them: which rows, how they are
    computed). A later run on the same model and data, or a resume (run.py sets the objective up
    from the starting model again), reads the stored tensors back bit for bit instead of running the
    reference over every row. `folder` None (no data cache): computed, not stored. A store that fails
    (disk full, read-only) is said and training goes on, as for the tokenization cache."""
    if folder is None:
        return compute()
    key = hashlib.blake2b(f"{weights_fingerprint(model)}|{sorted(parts.items())!r}".encode(),
                          digest_size=16).hexdigest()
    path = Path(folder) / "reference" / f"{key}.safetensors"
    if path.is_file():
        try:
            values = {int(k): v for k, v in load_file(path).items()}
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file: compute again, never trust it
            log.warning("precomputed reference entry %s unreadable (%s); recomputing", path, e)
        else:
            COUNTERS["hits"] += 1
            log.info("precomputed reference: read from %s", path)
            return values
    COUNTERS["misses"] += 1
    log.info("precomputed reference: computing into %s", path)
    values = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{key}-", suffix=".safetensors", dir=path.parent)
        os.close(fd)
        try:
            save_file({str(k): v.contiguous() for k, v in values.items()}, tmp)
            os.replace(tmp, path)  # whole or absent: another rank storing the same entry is as good
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as fault:
        warnings.warn(f"precomputed reference: cannot store its values under {path.parent}: {fault.strerror}; "
                      f"training goes on without caching them (data.cache_dir moves the cache)", stacklevel=2)
    return values
