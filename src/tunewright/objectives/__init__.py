"""Training objectives, keyed by `objective.name`.

An objective is a module with:

    loss(model, batch, cfg) -> (loss_sum, metrics)   summed over target tokens (not averaged:
                                                     the loop divides by the target-token count of
                                                     the whole accumulated global batch)
    count_targets(batch) -> int                      target tokens in the batch

It does not own the loop. A new objective is one file here, one line below and one test file.
"""

from __future__ import annotations

from tunewright.objectives import causal_lm, seq2seq
from tunewright.registry import Registry

__all__ = ["OBJECTIVES", "resolve_objective"]

OBJECTIVES: Registry = Registry("objective")
OBJECTIVES.register("causal_lm", causal_lm)
OBJECTIVES.register("seq2seq", seq2seq)


def resolve_objective(name: str, model_kind: str):
    """`auto` follows the model: encoder-decoder models train seq2seq, the rest causal_lm."""
    return OBJECTIVES.get(model_kind if name == "auto" else name)
