"""The base of every config section, shared by `config.py` and the per-method config classes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["Section", "not_supported_yet"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are re-checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _plain_values(cls, raw):
        if isinstance(raw, dict):
            raw = {k: _plain_value(cls.model_fields.get(k), v) for k, v in raw.items()}
        return raw


class _Boolean:
    """A YAML boolean given for a number: fails the field's type check with the key path intact."""

    def __init__(self, value: bool):
        self.value = value

    def __repr__(self) -> str:
        return str(self.value).lower()


def _plain_value(field, value):
    if field is None:
        return value
    # pydantic's lax mode reads `true` as 1 for an int key: `train.max_steps=true` would train one step
    if isinstance(value, bool) and _numeric(field.annotation):
        return _Boolean(value)
    # `output:` with nothing under it is YAML null: an empty section
    if value is None and _is_section(field.annotation):
        return {}
    return value


def _numeric(annotation) -> bool:
    import typing
    args = typing.get_args(annotation) or (annotation,)
    return bool(args) and all(a in (int, float, type(None)) for a in args) and any(a in (int, float) for a in args)


def _is_section(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def not_supported_yet(value: Any, key: str, when: str) -> Any:
    """Reject a truthy value of a key that a later release implements, instead of ignoring it."""
    if value:
        raise ValueError(f"{key} is not supported yet ({when}); remove it or set it to false")
    return value
