"""Table rows as text: the `tabular` data format's serialization (Hegselmann et al. 2023, "TabLLM:
Few-shot Classification of Tabular Data with Large Language Models", compare these templates).

A row {area_m2: 85, rooms: 3, city: "Orlen", target: "Yes"} with `target: target` becomes

    sentences   The area m2 is 85. The rooms is 3. The city is Orlen.            (TabLLM's "text template")
    key_value   area_m2: 85 \\n rooms: 3 \\n city: Orlen                           (its "list template")
    a .jinja    any text, from `row` (features only, in order), `features` [(name, value, unit)], `units`

followed by a blank line and `question`; the reply is the target's value. The target column is never
written into the prompt: it is left out of `row` before any template sees it, and a Jinja template
that names it fails (StrictUndefined). Numbers keep up to 6 significant digits (85, 0.00123, 1.5e+07);
an empty or null feature is written `unknown`; a boolean target reads Yes/No.

This module imports nothing of the format registry (data/formats.py registers `tabular` from here).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from tunewright.errors import ConfigError, DataError
from tunewright.sections import Section

if TYPE_CHECKING:  # annotations only: the schema imports this module
    from tunewright.schema import DataSource

__all__ = ["TabularOptions", "SERIALIZATIONS", "row_prompt", "feature_values", "serialize"]

SERIALIZATIONS = ("sentences", "key_value")


class TabularOptions(Section):
    target: str = Field("target", description="The column to predict; its value is the reply and never part of the prompt.")
    features: list[str] | None = Field(None, description="Columns written into the prompt, in this order; default: "
                                                         "every column but the target, in the row's order.")
    units: dict[str, str] = Field(default_factory=dict, description="Units written after a feature's value, e.g. {area_m2: m²}.")
    serialization: str = Field("sentences", description=(
        "How a row becomes text: `sentences` (The area is 85 m².), `key_value` (area: 85 m², one per line) or a "
        ".jinja file given `row`, `features` and `units` (not `data.template`, the chat template)."))
    question: str | None = Field(None, description="Text after the row, e.g. 'Is the price above the median? "
                                                   "Answer Yes or No.'")

    @field_validator("serialization")
    @classmethod
    def _known(cls, v):
        if v not in SERIALIZATIONS and not v.endswith((".jinja", ".j2")):
            raise ValueError(f"serialization: expected {', '.join(SERIALIZATIONS)} or a .jinja file, got {v!r}")
        return v


def _number(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def _shown(value) -> str:
    """A feature value as written: numbers to 6 significant digits, missing as `unknown`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "unknown"
    if isinstance(value, float) and not math.isfinite(value):
        return "unknown"
    return _number(value) if isinstance(value, (int, float)) else str(value).strip()


def _kind(value) -> str:
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def feature_values(row: dict, line: int, src: DataSource) -> tuple[dict, str]:
    """({feature: value} in prompt order, the target's text) of one row; DataError naming the column."""
    opts = src.tabular or TabularOptions()
    if opts.target not in row:
        raise DataError(src.path, line, opts.target, f"the target column is missing; columns: {', '.join(map(str, row))}")
    target = row[opts.target]
    if isinstance(target, (dict, list)):
        raise DataError(src.path, line, opts.target, f"expected a value, got {_kind(target)}")
    if target is None or (isinstance(target, str) and not target.strip()) or \
            (isinstance(target, float) and not math.isfinite(target)):
        raise DataError(src.path, line, opts.target, "empty target")
    reply = ("Yes" if target else "No") if isinstance(target, bool) else _shown(target)
    names = opts.features if opts.features is not None else [c for c in row if c != opts.target]
    if opts.target in names:
        raise ConfigError(f"{src.path}: tabular.features: lists the target {opts.target!r}; the target must not be "
                          f"part of the prompt")
    if not names:
        raise DataError(src.path, line, None, f"no feature columns besides the target {opts.target!r}")
    features = {}
    for name in names:
        if name not in row:
            raise DataError(src.path, line, name, f"missing (named in tabular.features); columns: {', '.join(map(str, row))}")
        if isinstance(row[name], (dict, list)):
            raise DataError(src.path, line, name, f"expected a number, text or boolean, got {_kind(row[name])}")
        features[name] = row[name]
    return features, reply


def serialize(features: dict, opts: TabularOptions, source: str = "<rows>") -> str:
    """The row's features as text, the way `opts.serialization` says."""
    units = opts.units
    if opts.serialization == "sentences":
        return " ".join(f"The {name.replace('_', ' ')} is {_with_unit(value, units.get(name))}."
                        for name, value in features.items())
    if opts.serialization == "key_value":
        return "\n".join(f"{name}: {_with_unit(value, units.get(name))}" for name, value in features.items())
    template = _template(opts.serialization, source)
    try:
        return template.render(row=features, units=units,
                               features=[(n, _shown(v), units.get(n)) for n, v in features.items()]).strip()
    except Exception as err:  # noqa: BLE001 - a template mistake, named with its file
        raise ConfigError(f"{source}: tabular.serialization: {opts.serialization}: {type(err).__name__}: "
                          f"{' '.join(str(err).split())}") from None


def _with_unit(value, unit: str | None) -> str:
    shown = _shown(value)
    return f"{shown} {unit}" if unit and shown != "unknown" else shown


@functools.lru_cache(maxsize=16)
def _compiled(path: str, mtime: float):
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    # sandboxed: a recipe's template is data, not code; StrictUndefined: naming the target (or any
    # column that is not a feature) is an error, not an empty string
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False)
    return env.from_string(Path(path).read_text(encoding="utf-8"))


def _template(path: str, source: str):
    from jinja2 import TemplateError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{source}: tabular.serialization: {path}: no such template file")
    try:
        return _compiled(str(p), p.stat().st_mtime)
    except (TemplateError, OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{source}: tabular.serialization: {path}: {' '.join(str(err).split())}") from None


def row_prompt(row: dict, line: int, src: DataSource) -> tuple[str, str]:
    """(prompt, reply) of one table row: the serialized features, a blank line and the question."""
    opts = src.tabular or TabularOptions()
    features, reply = feature_values(row, line, src)
    text = serialize(features, opts, src.path)
    return (f"{text}\n\n{opts.question}" if opts.question else text), reply
