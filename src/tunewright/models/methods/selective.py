"""Selective fine-tuning: train only parameters chosen by name pattern, the last k layers, or
biases only (BitFit, Ben Zaken et al. 2021); everything else stays frozen."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge"]


class Config(Section):
    name: Literal["selective"] = Field("selective", description="Train a chosen subset of parameters.")
    patterns: list[str] = Field(default_factory=list, description="Regexes matched (re.search) against parameter names.")
    last_k_layers: int | None = Field(None, gt=0, description="Train every parameter of the last k transformer blocks.")
    bias_only: bool = Field(False, description="BitFit: train only bias terms.")

    @model_validator(mode="after")
    def _something(self):
        if not (self.patterns or self.last_k_layers or self.bias_only):
            raise ValueError("selective needs at least one of patterns, last_k_layers, bias_only")
        return self


def apply(model, cfg: Config):
    raise NotImplementedError


def save(model, path) -> None:
    raise NotImplementedError


def load(model, path) -> None:
    raise NotImplementedError


def merge(model):
    return model
