"""The config reference page, docs/config.md, generated from the pydantic schema in config.py.

Every key of a recipe is documented where it is declared (`Field(default, description=...)`), so the
reference is rendered from the schema instead of written by hand: this module walks `RunConfig`,
each section, the sections nested in them (`data.datasets[]`, `eval.early_stopping`) and every
method's, objective's and regularizer's `Config`, and writes one markdown table per section (key,
type, default, description). The page is committed; a test fails when it no longer matches the
schema.

    python -m tunewright.config_docs            # rewrite docs/config.md
    python -m tunewright.config_docs --check    # exit 1 when docs/config.md is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tunewright.config import RunConfig
from tunewright.models.methods import METHOD_CONFIGS, PLANNED_METHODS
from tunewright.objectives import OBJECTIVE_CONFIGS, PLANNED_OBJECTIVES
from tunewright.regularizers import REGULARIZER_CONFIGS

__all__ = ["SectionDoc", "sections", "render_reference", "DEFAULT_OUTPUT", "main"]

DEFAULT_OUTPUT = Path("docs/config.md")  # relative to the repository root, where the command runs
REGENERATE = "python -m tunewright.config_docs"


@dataclass
class SectionDoc:
    """One table of the page: the YAML path users write and the pydantic class behind it."""

    path: str  # "model", "data.datasets[]", "method" (one per method), "eval.early_stopping"
    model: type[BaseModel]
    intro: str  # the description of the field that holds this section
    variant: str | None = None  # for a discriminated union (`method`, `regularizers[]`): the value of `name`
    also: list[str] = field(default_factory=list)  # other paths holding the same class

    @property
    def title(self) -> str:
        return f"{self.path} (name: {self.variant})" if self.variant else self.path

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.path} {self.variant or ''}".lower()).strip("-")


# ---------------------------------------------------------------- walking the schema

def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _union_args(tp) -> tuple | None:
    """The members of `X | Y` / `Optional[X]` / `Union[...]`, or None for any other type."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _nested(tp) -> list[tuple[type[BaseModel], bool]]:
    """Section classes reachable from a field's annotation, each with whether it sits in a list."""
    if _is_model(tp):
        return [(tp, False)]
    if typing.get_origin(tp) is typing.Annotated:
        return _nested(typing.get_args(tp)[0])
    if (args := _union_args(tp)) is not None:
        return [found for a in args for found in _nested(a)]
    if typing.get_origin(tp) is list:
        return [(m, True) for m, _ in _nested(typing.get_args(tp)[0])]
    return []


def _variant(model: type[BaseModel]) -> str | None:
    """The discriminator value (`name`) of a union member, e.g. "lora"."""
    info = model.model_fields.get("name")
    return info.default if info is not None and isinstance(info.default, str) else None


def sections() -> list[SectionDoc]:
    """Every section of a run in page order: depth first, in the order fields are declared.

    A class met twice (`data.eval_datasets[]` holds the same `DataSource` as `data.datasets[]`)
    is documented once; the second field links to the first.
    """
    seen: dict[type[BaseModel], SectionDoc] = {}

    def visit(doc: SectionDoc) -> None:
        seen[doc.model] = doc
        for name, info in doc.model.model_fields.items():
            children = _nested(info.annotation)
            for child, in_list in children:
                path = (f"{doc.path}.{name}" if doc.path else name) + ("[]" if in_list else "")
                if child in seen:
                    seen[child].also.append(path)
                    continue
                # a union of one member (one regularizer so far) is still titled by its name
                union = len(children) > 1 or path in FAMILIES
                visit(SectionDoc(path, child, info.description or "", _variant(child) if union else None))

    visit(SectionDoc("", RunConfig, ""))
    # Every registered member, also one that a future RunConfig forgot to put in its union.
    for path, (members, _) in FAMILIES.items():
        for name, cfg in members.items():
            if cfg not in seen:
                visit(SectionDoc(path, cfg, "", name))
    return list(seen.values())


# Sections whose members are picked by `name`: YAML path -> (name -> Config, planned names -> message)
FAMILIES = {"method": (METHOD_CONFIGS, PLANNED_METHODS), "objective": (OBJECTIVE_CONFIGS, PLANNED_OBJECTIVES),
            "regularizers[]": (REGULARIZER_CONFIGS, {})}


# ---------------------------------------------------------------- rendering one cell

def _type(tp) -> str:
    """`int`, `str | null`, `"min" | "max"`, `list[str]`, `section`: what a user may write."""
    if tp is type(None):
        return "null"
    if _is_model(tp):
        return "section"
    if tp in (str, int, float, bool):
        return tp.__name__
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if _union_args(tp) is not None:
        return " | ".join(dict.fromkeys(_type(a) for a in args))  # one "section" for a union of them
    if origin is list:
        inner = _type(args[0])
        return "list of sections" if inner == "section" else f"list[{inner}]"
    if origin is dict:
        return f"dict[{', '.join(_type(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


_BOUNDS = {at.Gt: (">", "gt"), at.Ge: (">=", "ge"), at.Lt: ("<", "lt"), at.Le: ("<=", "le")}


def _bounds(info: FieldInfo) -> str:
    """Constraints pydantic checks, e.g. `> 0, < 1` or `at least 1 item`."""
    parts = []
    for m in info.metadata:
        if type(m) in _BOUNDS:
            op, attr = _BOUNDS[type(m)]
            parts.append(f"{op} {_value(getattr(m, attr))}")
        elif isinstance(m, at.MinLen):
            parts.append(f"at least {m.min_length} item{'s' if m.min_length != 1 else ''}")
        elif isinstance(m, at.MaxLen):
            parts.append(f"at most {m.max_length} items")
    return ", ".join(parts)


def _value(v) -> str:
    """A value as it would be written in YAML (JSON flow style is valid YAML)."""
    return json.dumps(v, ensure_ascii=False)


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "*required*"
    value = info.get_default(call_default_factory=True, validated_data={})
    if isinstance(value, BaseModel):
        # A section defaults to all its keys' defaults; a union member is named by its tag.
        tag = info.discriminator
        return f"`{{{tag}: {getattr(value, tag)}}}`" if isinstance(tag, str) else "`{}`"
    return f"`{_value(value)}`"


def _text(text: str) -> str:
    """Prose as one markdown line. A `<` that would open an HTML tag (`<dir>`) is escaped outside
    code spans, so it is shown instead of swallowed; `< 1` and `>` are left readable."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    return "".join(p if p.startswith("`") else re.sub(r"<(?=[A-Za-z/!?])", "&lt;", p) for p in parts)


def _cell(text: str) -> str:
    """A table cell: prose with pipes escaped (also inside code spans, as GFM wants)."""
    return _text(text).replace("|", "\\|")


# ---------------------------------------------------------------- the page

def _table(doc: SectionDoc, by_model: dict[type[BaseModel], SectionDoc]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in doc.model.model_fields.items():
        kind = f"`{_type(info.annotation)}`"
        if bounds := _bounds(info):
            kind += f" ({bounds})"
        desc = info.description or ""
        links = [by_model[m] for m, _ in _nested(info.annotation) if m in by_model]
        if links:
            desc += " See " + ", ".join(f"[{s.title}](#{s.anchor})" for s in links) + "."
        if isinstance(info.discriminator, str):
            desc += f" The `{info.discriminator}` key picks which."
        lines.append(f"| `{name}` | {_cell(kind)} | {_cell(_default(info))} | {_cell(desc)} |")
    return lines


def _module_summary(model: type[BaseModel]) -> str:
    """First paragraph of the docstring of the module that declares a method's Config."""
    doc = sys.modules[model.__module__].__doc__ or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def render_reference() -> str:
    """The whole of docs/config.md as a string (deterministic: same schema, same bytes)."""
    docs = sections()
    by_model = {d.model: d for d in docs}
    out = [
        "# Config reference",
        "",
        f"<!-- Generated from src/tunewright/config.py by `{REGENERATE}`. Do not edit by hand. -->",
        "",
        "This page is generated from the pydantic schema of a run, so it lists exactly the keys that "
        f"`tunewright` accepts. After changing the schema, regenerate it with `{REGENERATE}`; "
        f"`{REGENERATE} --check` exits 1 when the page is stale (the test suite runs the same check).",
        "",
        "A recipe is one YAML file whose top-level keys are the sections below. Unknown keys are errors "
        "with a \"did you mean\" suggestion. Any key can be overridden on the command line as "
        "`section.key=value` (the value is parsed as YAML; list items by index, e.g. "
        "`data.datasets.0.path=train.jsonl`).",
    ]
    for doc in docs:
        heading = f"`{doc.path}`" if doc.path else "Top-level keys"
        if doc.variant:
            heading += f" with `name: {doc.variant}`"
        out += ["", f'<a id="{doc.anchor or "top-level-keys"}"></a>', "", f"## {heading}", ""]
        # A method or regularizer is introduced by its module's docstring (what it is, the paper), a section by
        # the description of the key that holds it.
        intro = (_module_summary(doc.model) or doc.intro) if doc.variant else doc.intro
        if doc.also:
            intro += " " + " ".join(f"The items of `{p}` have the same keys." if p.endswith("[]")
                                    else f"`{p}` has the same keys." for p in doc.also)
        if doc.model.__dict__.get("__doc__"):
            intro = f"{intro} {' '.join(doc.model.__doc__.split())}".strip()
        if intro:
            out += [_text(intro), ""]
        out += _table(doc, by_model)
    for path, (_, planned) in FAMILIES.items():
        if planned:
            out += ["", f'<a id="planned-{path}s"></a>', "", f"## Planned {path}s", "",
                    f"These `{path}.name` values are rejected with the message shown, instead of being "
                    "accepted and ignored.", "", "| name | message |", "|---|---|"]
            out += [f"| `{name}` | {_cell(msg)} |" for name, msg in planned.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m tunewright.config_docs [--check] [--output PATH]`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tunewright.config_docs",
                                     description="Write the config reference generated from the schema.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs, write nothing")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    args = parser.parse_args(argv)
    page = render_reference()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else None
        if current != page:
            why = "missing" if current is None else "stale"
            print(f"{args.output} is {why}: regenerate it with `{REGENERATE}`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page, encoding="utf-8", newline="\n")
    print(f"wrote {args.output} ({len(sections())} sections)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
