"""Full fine-tuning: every parameter trains; saves and merges as a plain transformers folder."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge"]


class Config(Section):
    name: Literal["full"] = Field("full", description="Train every parameter.")


def apply(model, cfg: Config):
    raise NotImplementedError


def save(model, path) -> None:
    raise NotImplementedError


def load(model, path) -> None:
    raise NotImplementedError


def merge(model):
    return model
