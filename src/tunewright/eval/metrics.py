"""Text metrics, per example and per corpus, from well-kept libraries.

exact_match: 1 when prediction and reference are equal after trimming outer whitespace.
rouge_l: ROUGE-L F1 (longest common subsequence) from Google's `rouge-score` package, with its
default tokenizer and no stemming (Lin 2004).
"""

from __future__ import annotations

__all__ = ["exact_match", "rouge_l", "corpus_scores"]


def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


def rouge_l(prediction: str, reference: str) -> float:
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure


def corpus_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean exact match and ROUGE-L F1 over aligned lists (as fractions in [0, 1])."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need equally long, non-empty lists (got {len(predictions)} and {len(references)})")
    n = len(predictions)
    return {"exact_match": sum(map(exact_match, predictions, references)) / n,
            "rouge_l": sum(map(rouge_l, predictions, references)) / n}
