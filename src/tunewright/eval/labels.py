"""Accuracy, macro F1 and ROC AUC from class probabilities: one computation for label scoring
(eval/scoring.py, a language model's P(label | prompt)) and a classification head's evaluation
(objectives/classification.py), so both report the same `eval_accuracy`, `eval_macro_f1`, `eval_auc`.

    prediction  argmax over the classes (ties: the first)
    accuracy    share of rows whose prediction is the reference (scikit-learn accuracy_score)
    macro F1    unweighted mean of the per-class F1 (f1_score average="macro")
    AUC         two classes: ROC AUC of P(positive) (default class 1); more: one-vs-rest macro AUC
                over every class (roc_auc_score multi_class="ovr"); nan when undefined (one class only)
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["label_metrics", "multi_label_metrics"]


def label_metrics(probs: torch.Tensor, truth: Sequence[int], positive: int = 1) -> dict:
    """{"accuracy", "macro_f1", "auc"} of `probs` [N, K] (rows sum to 1) against class ids `truth`."""
    from tunewright.eval.metrics import METRICS

    truth = [int(t) for t in truth]
    predicted = probs.argmax(-1).tolist()
    if probs.shape[1] == 2:
        auc = METRICS.get("auc")(probs[:, positive].tolist(), [int(t == positive) for t in truth], pos_label=1)
    else:
        auc = METRICS.get("auc")(probs.tolist(), truth, labels=list(range(probs.shape[1])))
    return {"accuracy": METRICS.get("accuracy")(predicted, truth).corpus["accuracy"],
            "macro_f1": METRICS.get("macro_f1")(predicted, truth).corpus["macro_f1"],
            "auc": auc.corpus["auc"]}


def multi_label_metrics(probs: torch.Tensor, truth: torch.Tensor) -> dict:
    """Multi-label rows: `probs` [N, K] independent P(class), `truth` [N, K] 0/1. Subset accuracy (every
    class right at 0.5), macro F1 over classes, macro ROC AUC over the classes both present and absent."""
    import math

    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    y, p = truth.int().numpy(), probs.double().numpy()
    predicted = (p >= 0.5).astype(int)
    both = [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < y.shape[0]]
    auc = float(roc_auc_score(y[:, both], p[:, both], average="macro")) if both else math.nan
    return {"accuracy": float(accuracy_score(y, predicted)),
            "macro_f1": float(f1_score(y, predicted, average="macro", zero_division=0)), "auc": auc}
