"""The base of every config section, shared by `config.py` and the per-method config classes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Section", "not_supported_yet"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are re-checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def not_supported_yet(value: Any, key: str, when: str) -> Any:
    """Reject a truthy value of a key that a later release implements, instead of ignoring it."""
    if value:
        raise ValueError(f"{key} is not supported yet ({when}); remove it or set it to false")
    return value
