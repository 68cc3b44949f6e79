"""Padding-free packing and the two collators (packed rows, padded rows).

Packing puts several examples in one row and gives each its own position ids (0, 1, ... per
example) with NO attention mask. transformers (>= 4.x masking_utils, 5.x everywhere) then reads
the sequence boundaries from the position ids and builds a block-diagonal causal mask for sdpa and
eager attention, so no token attends across examples:

    row:        [a0 a1 a2 | b0 b1 | c0 c1 c2 c3 | pad pad]
    position:   [ 0  1  2 |  0  1 |  0  1  2  3 |  0   1 ]
    labels:     [-100 a1 a2 | -100 b1 | -100 c1 c2 c3 | -100 -100]

It only does so when no attention mask and no KV cache are passed: the forward must run with
`use_cache=False` (the default `use_cache=True` in eval mode creates a cache, the boundaries are
ignored and examples attend to each other). The first label of each example is IGNORE_INDEX so the
shifted loss never asks the last token of one example to predict the first token of the next.

Bins are chosen first-fit-decreasing (Johnson 1973: at most 11/9 OPT + 6/9 bins), found in
O(n log n) with a max segment tree over the bins' free space.
"""

from __future__ import annotations

from tunewright.data.types import IGNORE_INDEX, Encoded
from tunewright.errors import ConfigError

__all__ = ["pack", "collate_packed", "collate_padded", "packing_efficiency"]


def pack(lengths: list[int], max_len: int) -> list[list[int]]:
    """Example indices grouped into bins of total length <= max_len, first-fit-decreasing.

    Deterministic: longer examples first, ties by index; each goes to the earliest-opened bin with
    room. Bins are listed in the order they were opened.
    """
    for i, n in enumerate(lengths):
        if n > max_len:
            raise ConfigError(f"data.packing: example {i} has {n} tokens, more than the packed row length {max_len}; "
                              f"set data.cutoff_len <= {max_len}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    size = 1
    while size < max(1, len(lengths)):
        size *= 2
    free = [0] * (2 * size)  # segment tree: free[node] = most free space of any bin below it
    bins: list[list[int]] = []
    for i in order:
        need = lengths[i]
        if bins and free[1] >= need:
            node = 1
            while node < size:  # descend to the leftmost (earliest-opened) bin with room
                node = 2 * node if free[2 * node] >= need else 2 * node + 1
            b = node - size
        else:
            b = len(bins)
            bins.append([])
            node = b + size
            free[node] = max_len
        bins[b].append(i)
        free[node] -= need
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return bins


def packing_efficiency(lengths: list[int], bins: list[list[int]], max_len: int) -> float:
    """Real tokens / (rows * max_len): the share of a packed batch that is not padding."""
    return sum(lengths[i] for b in bins for i in b) / (len(bins) * max_len) if bins else 0.0


def collate_packed(encoded_rows: list[list[Encoded]], pad_id: int) -> dict:
    """Packed rows -> tensors for a padding-free forward (call the model with use_cache=False).

    Returns input_ids, labels, position_ids: each [batch, seq] (long), seq = the longest row;
    `seq_lens` [[len of each example] per row] for varlen kernels; `num_tokens` (real tokens).
    Padding at a row's end has labels IGNORE_INDEX and positions restarting at 0, so it forms its
    own sequence that no real token attends to.
    """
    import torch

    width = max(sum(len(e.input_ids) for e in row) for row in encoded_rows)
    ids = torch.full((len(encoded_rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded_rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(encoded_rows), width), dtype=torch.long)
    seq_lens: list[list[int]] = []
    for r, row in enumerate(encoded_rows):
        at = 0
        lens = []
        for e in row:
            n = len(e.input_ids)
            ids[r, at:at + n] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[r, at:at + n] = torch.tensor(e.labels, dtype=torch.long)
            labels[r, at] = IGNORE_INDEX  # nothing predicts across the boundary
            positions[r, at:at + n] = torch.arange(n)
            at += n
            lens.append(n)
        positions[r, at:] = torch.arange(width - at)
        seq_lens.append(lens)
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "seq_lens": seq_lens,
            "num_tokens": sum(map(sum, seq_lens))}


def collate_padded(batch: list[Encoded], pad_id: int, side: str = "right") -> dict:
    """One example per row, padded to the longest: input_ids, attention_mask, labels, each [batch, seq].

    Labels are IGNORE_INDEX on padding. `side="left"` pads in front, as generation needs.
    """
    import torch

    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, e in enumerate(batch):
        n = len(e.input_ids)
        span = slice(0, n) if side == "right" else slice(width - n, width)
        ids[r, span] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[r, span] = torch.tensor(e.labels, dtype=torch.long)
        mask[r, span] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
