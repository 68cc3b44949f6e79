"""The order of an epoch: which examples form each micro-batch, and in which rows.

A plan is `list[micro_batch]`, a micro-batch `list[row]`, a row `list[example index]` (one index
per row unless packing). It depends only on (lengths, seed, epoch, settings), so every rank of a
distributed run and a resumed run compute the same plan without communicating.

  plain            seeded shuffle, cut into micro-batches
  group_by_length  the shuffle cut into mega-batches of MEGA_BATCH micro-batches, each sorted by
                   length before cutting (similar lengths, less padding); micro-batches are then
                   shuffled, except the one holding the longest example goes first, so an
                   out-of-memory shows at step 1 rather than hours in (as HF's LengthGroupedSampler)
  packing          shuffled examples packed first-fit-decreasing into rows of <= max_len tokens
                   (ties broken by the shuffle, so rows differ per epoch), rows shuffled and cut
                   into micro-batches of `micro_batch_size` rows
"""

from __future__ import annotations

import random

from tunewright.data.packing import pack
from tunewright.errors import ConfigError

__all__ = ["plan_batches", "MEGA_BATCH"]

MEGA_BATCH = 50  # micro-batches per length-sorted group: large enough to match lengths, small enough to stay random


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def plan_batches(lengths: list[int], micro_batch_size: int, *, seed: int, epoch: int,
                 group_by_length: bool = False, packing: bool = False, max_len: int | None = None
                 ) -> list[list[list[int]]]:
    """The micro-batches of one epoch (see the module docstring). Same seed and epoch -> same plan.

    The last micro-batch may be short; `packing` needs `max_len` (the packed row length).
    """
    if micro_batch_size < 1:
        raise ConfigError(f"train.micro_batch_size: must be at least 1, got {micro_batch_size}")
    # A string seed is hashed with sha512 by `random`: stable across processes and Python versions.
    rng = random.Random(f"tunewright:{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if packing:
        if not max_len:
            raise ConfigError("data.packing: needs the packed row length (max_len)")
        # pack() breaks length ties by index: packing positions in the shuffle makes ties random
        rows = [[order[j] for j in b] for b in pack([lengths[i] for i in order], max_len)]
        rng.shuffle(rows)
        return _chunks(rows, micro_batch_size)
    if not group_by_length:
        return [[[i] for i in chunk] for chunk in _chunks(order, micro_batch_size)]
    batches: list[list[int]] = []
    for mega in _chunks(order, micro_batch_size * MEGA_BATCH):
        mega.sort(key=lambda i: -lengths[i])  # stable: equal lengths keep their shuffled order
        batches += _chunks(mega, micro_batch_size)
    rng.shuffle(batches)
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]), default=0)
    if batches:
        batches.insert(0, batches.pop(longest))
    return [[[i] for i in chunk] for chunk in batches]
