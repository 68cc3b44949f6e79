"""Random-token preference pairs for the pair objectives' tests (dpo, reward): prompts and answers of
different lengths, so padding differs from one batch to another."""

from __future__ import annotations

import torch

from tunewright.data.types import Encoded


def random_pairs(n: int, seed: int = 0, margins: bool = False) -> list[Encoded]:
    """n encoded pairs (chosen in input_ids, rejected in meta); with `margins`, row i has margin 0.25 i."""
    g = torch.Generator().manual_seed(seed)

    def ids(k):
        return torch.randint(5, 400, (k,), generator=g).tolist()

    out = []
    for i in range(n):
        p, c, r = ids(3 + i % 4), ids(2 + (i * 3) % 7), ids(1 + (i * 5) % 6)
        meta = {"prompt_len": len(p), "rejected": r, "rejected_labels": r}
        if margins:
            meta["margin"] = 0.25 * i
        out.append(Encoded(p + c, [-100] * len(p) + c, "x.jsonl", i + 1, meta))
    return out
