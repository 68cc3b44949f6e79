"""Retrieval metrics on a ranking small enough to work out by hand."""

from __future__ import annotations

import pytest
import torch

from tunewright.eval.retrieval import rank_of_relevant, retrieval_metrics


def test_ranks_recall_at_k_and_mrr_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3],    # relevant 0: nothing above it          -> rank 1
                           [0.2, 0.3, 0.8, 0.25],   # relevant 0: 0.3, 0.8 and 0.25 above    -> rank 4
                           [0.5, 0.5, 0.1, 0.0],    # relevant 1: a tie with 0.5 is not above -> rank 1
                           [0.1, 0.7, 0.9, 0.4]])   # relevant 3: 0.7 and 0.9 above          -> rank 3
    ranks = rank_of_relevant(scores, torch.tensor([0, 0, 1, 3]))
    assert ranks.tolist() == [1, 4, 1, 3]
    metrics = retrieval_metrics(ranks, ks=(1, 3, 4))
    assert metrics == pytest.approx({"recall@1": 2 / 4, "recall@3": 3 / 4, "recall@4": 4 / 4,
                                     "mrr": (1 + 1 / 4 + 1 + 1 / 3) / 4})
    assert retrieval_metrics(ranks)["recall@10"] == 1.0  # the default cut-offs 1, 5 and 10
