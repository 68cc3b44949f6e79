"""`objective.name: auto` (the default): the objective the model's architecture implies, chosen once
the model is known: seq2seq for encoder-decoder models (T5, BART), causal_lm for the rest.

Its config carries causal_lm's keys, so a recipe can tune the loss without naming the objective
(and config.yaml files saved with `{name: auto, chunk_size: ..., cross_entropy: ...}` load).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunewright.errors import ConfigError
from tunewright.objectives import causal_lm, seq2seq
from tunewright.sections import Section

__all__ = ["Config", "resolve"]


class Config(Section):
    name: Literal["auto"] = Field("auto", description=(
        "Training objective; `auto` picks seq2seq for encoder-decoder models, else causal_lm."))
    chunk_size: causal_lm.ChunkSize = causal_lm.CHUNK_SIZE
    cross_entropy: causal_lm.CrossEntropy = "fused"

    @model_validator(mode="after")
    def _full_takes_no_chunks(self):
        causal_lm.check_chunking(self)
        return self


def resolve(cfg: Config, head: str) -> tuple[str, Section]:
    """(objective name, its Config) for a model whose architecture generates with `head`."""
    if head == "seq2seq":
        if cfg.cross_entropy != "fused":
            # `auto` resolves to seq2seq only once the model is known, so the schema could not refuse it
            raise ConfigError(f"objective.cross_entropy: {cfg.cross_entropy!r} has no effect with an encoder-decoder "
                              "model (seq2seq computes full logits); remove the key")
        return "seq2seq", seq2seq.Config()
    return "causal_lm", causal_lm.Config(chunk_size=cfg.chunk_size, cross_entropy=cfg.cross_entropy)
