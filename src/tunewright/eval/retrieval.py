"""Retrieval metrics from a score matrix: each query has one relevant document.

    rank_i     = 1 + #{documents scored strictly above query i's relevant one}
                 (a tie does not push the relevant document down: a copy of it scores the same)
    Recall@k   = mean_i [rank_i <= k]          (one relevant document: the hit rate at k)
    MRR        = mean_i 1 / rank_i
"""

from __future__ import annotations

import torch

__all__ = ["rank_of_relevant", "retrieval_metrics", "KS"]

KS = (1, 5, 10)


def rank_of_relevant(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """[Q] 1-based ranks of each query's relevant document, from scores [Q, D] and its index [Q]."""
    own = scores.gather(1, relevant.view(-1, 1))  # [Q, 1]
    return 1 + (scores > own).sum(-1)


def retrieval_metrics(ranks: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """{"recall@k" for each k, "mrr"} of 1-based ranks [Q]."""
    ranks = ranks.double()
    out = {f"recall@{k}": float((ranks <= k).double().mean()) for k in ks}
    out["mrr"] = float((1.0 / ranks).mean())
    return out
