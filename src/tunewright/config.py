"""Reading a run's config: YAML (bounded), `a.b=value` overrides, validation into `RunConfig`
(schema.py), and errors as one line per key with "did you mean".

`load_config(path, overrides)` reads the YAML, applies overrides from the command line and
validates; `dump_config` writes the resolved config as saved in the run folder. The section
classes are re-exported here, so `from tunewright.config import TrainConfig` keeps working.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunewright.errors import ConfigError, clipped, shown
from tunewright.models.methods import METHOD_CONFIGS, PLANNED_METHODS
from tunewright.objectives import OBJECTIVE_CONFIGS, PLANNED_OBJECTIVES
from tunewright.registry import suggest
from tunewright.regularizers import REGULARIZER_CONFIGS
from tunewright.schema import (EVAL_METRICS, DataConfig, DataSource, EarlyStopping, EvalConfig, ModelConfig,
                               ObjectiveConfig, OutputConfig, RunConfig, Section, SmokeConfig, TrainConfig)

__all__ = [
    "Section", "ModelConfig", "DataSource", "DataConfig", "ObjectiveConfig", "EarlyStopping", "TrainConfig",
    "EvalConfig", "OutputConfig", "SmokeConfig", "RunConfig", "EVAL_METRICS", "load_config", "parse_config",
    "apply_overrides", "dump_config", "format_errors", "read_config", "as_run_config", "yaml_value", "shown",
    "clipped", "error_line", "error_lines", "not_a_file", "MAX_YAML_VALUES", "MAX_YAML_DEPTH", "UniqueKeyLoader",
]


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` (value parsed as YAML; list items by index: `data.datasets.0.path=x`)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {shown(item)}: expected key.sub=value")
        value = yaml_value(text, f"override {key}")
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {key}: {'.'.join(parts[:i])} has no item {part}")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"override {key}: {'.'.join(parts[:i])} is not a section")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return raw


# A recipe holds a few hundred values a few levels deep. These bounds are far above that and far
# below what hurts: an alias bomb (`b: &b [*a, *a, ...]`, ten levels) expands to billions of values
# and hangs whatever walks it; 10,000 nested `[` overflow the Python stack in PyYAML's composer.
MAX_YAML_VALUES = 100_000  # values once every alias is expanded
MAX_YAML_DEPTH = 100  # nesting levels, aliases expanded


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a repeated key (plain YAML keeps the last and silently drops the
    first) and a document that is too deep or expands past MAX_YAML_VALUES through its aliases."""

    _depth = 0

    def fetch_flow_collection_start(self, TokenClass):
        # `[[[[...` is refused while scanning: PyYAML's scanner reads ahead quadratically in it
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > MAX_YAML_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.get_mark())

    def compose_node(self, parent, index):
        # the composer recurses once per level: stop it long before Python's stack does
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):
        _check_expansion(node)  # before construction: the constructed document shares aliased values
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {shown(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_VALUES values or MAX_YAML_DEPTH levels,
    or refer to themselves, counting each distinct node once (linear in the file, not in the expansion)."""
    size: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) with aliases expanded
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            values = 1 + sum(size[id(c)][0] for c in children)
            depth = 1 + max((size[id(c)][1] for c in children), default=0)
            size[id(node)] = values, depth
            open_nodes.discard(id(node))
            if values > MAX_YAML_VALUES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"its aliases expand to more than {MAX_YAML_VALUES:,} values (an alias bomb?)",
                    node.start_mark)
            if depth > MAX_YAML_DEPTH:
                raise yaml.constructor.ConstructorError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels once its aliases are expanded",
                    node.start_mark)
        elif id(node) in open_nodes:
            raise yaml.constructor.ConstructorError(None, None, "an alias refers to the value that contains it",
                                                    node.start_mark)
        elif id(node) not in size:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def yaml_value(text: str, what: str) -> Any:
    """A value given on the command line (`key=VALUE`), read as YAML with the same bounds as a file."""
    if text == "":
        return ""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what}: cannot parse value {shown(text)}: {' '.join(str(getattr(e, 'problem', e)).split())}"
                          ) from None


# Sections whose members are chosen by `name` (discriminated unions): section key -> (family word,
# name -> Config, planned names -> message). Pydantic puts the chosen name in an error's location.
UNIONS = {"method": ("method", METHOD_CONFIGS, PLANNED_METHODS),
          "objective": ("objective", OBJECTIVE_CONFIGS, PLANNED_OBJECTIVES),
          "regularizers": ("regularizer", REGULARIZER_CONFIGS, {})}


def _union_of(loc: tuple) -> tuple | None:
    """The UNIONS entry of the section `loc` ends in (list indices skipped), if it is one."""
    keys = [p for p in loc if isinstance(p, str)]
    return UNIONS.get(keys[-1]) if keys else None


def _is_tag(loc: tuple, i: int) -> bool:
    union = _union_of(loc[:i])
    return isinstance(loc[i], str) and union is not None and loc[i] in union[1]


def _model_at(loc: tuple, raw: Any, root: type[BaseModel] = RunConfig) -> type[BaseModel] | None:
    """The pydantic model class that owns the last key of `loc` in a `root` config, for suggestions."""
    cls: Any = root
    node = raw
    for i, part in enumerate(loc[:-1]):
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            if _is_tag(loc, i):  # a discriminated union member: pydantic puts the tag in loc
                cls = _union_of(loc[:i])[1][part]
                continue
            return None
        ann = cls.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None
        cls = _unwrap(ann, node, UNIONS.get(part))
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _unwrap(ann, node, union=None):
    import typing
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    if typing.get_origin(ann) is list and args:
        return _unwrap(args[0], None, union)
    if typing.get_origin(ann) is typing.Annotated:
        return _unwrap(args[0], node, union)
    if args:
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            return models[0]
        if union is not None and isinstance(node, dict) and node.get("name") in union[1]:
            return union[1][node["name"]]
    return ann


def _dotted(loc: tuple) -> str:
    """`method.lora.r` -> `method.r`: pydantic puts the union tag in the location; users never wrote it."""
    parts = [str(p) for i, p in enumerate(loc) if not (i > 0 and _is_tag(loc, i))]
    # members of a plain union (`list[str] | Literal['all-linear']`) appear as labels such as
    # "list[str]" or "literal['all-linear']": not keys the user wrote
    return ".".join(p for p in parts if "[" not in p and "(" not in p)


def _expected(loc: tuple, root: type[BaseModel] = RunConfig) -> str:
    owner = _model_at(loc[:[isinstance(p, str) and "[" in p for p in loc].index(True)], {}, root)
    key = [p for p in loc if isinstance(p, str) and "[" not in p][-1]
    field = owner.model_fields.get(key) if owner else None
    return str(field.annotation).replace("typing.", "") if field else "another type"


def format_errors(err: ValidationError, raw: dict, source: str, root: type[BaseModel] = RunConfig) -> str:
    """pydantic's errors on `raw` (validated as `root`: a run config, or another config file made of
    its sections) as one line each: `source: key.path: reason`, with did-you-mean on unknown keys."""
    lines: list[str] = []
    union_paths: set[str] = set()
    for e in err.errors():
        loc = tuple(e["loc"])
        path = _dotted(loc)
        if e["type"] == "extra_forbidden":
            owner = _model_at(loc, raw, root)
            hint = suggest(loc[-1], owner.model_fields) if owner else ""
            lines.append(f"{source}: {clipped(path)}: unknown key{hint}")
        elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            tag = e.get("input", {}).get("name") if isinstance(e.get("input"), dict) else None
            word, members, planned = _union_of(loc) or ("member", {}, {})
            if isinstance(tag, str) and tag in planned:
                lines.append(f"{source}: {path}.name: {word} {shown(tag)}: {planned[tag]}")
            elif e["type"] == "union_tag_not_found":
                lines.append(f"{source}: {path}.name: Field required; known: {', '.join(members)}")
            else:
                hint = suggest(tag, members) if isinstance(tag, str) else ""
                lines.append(f"{source}: {path}.name: unknown {word} {shown(tag)}{hint}; "
                             f"known: {', '.join(members)}")
        elif any(isinstance(p, str) and "[" in p for p in loc):  # one line per key, not per union member
            if path not in union_paths:
                union_paths.add(path)
                got = e.get("input")
                lines.append(f"{source}: {path}: wrong type (got {shown(got)}); expected {_expected(loc, root)}")
        else:
            lines.append(error_line(source, path, e))
    return error_lines(lines, source)


MAX_ERROR_LINES = 20


def error_lines(lines: list[str], source: str) -> str:
    """The error lines, the first MAX_ERROR_LINES of them: a list of 100,000 bad items is one
    mistake repeated, not 100,000 lines to scroll."""
    if len(lines) > MAX_ERROR_LINES:
        lines = [*lines[:MAX_ERROR_LINES], f"{source}: ... and {len(lines) - MAX_ERROR_LINES:,} more errors"]
    return "\n".join(lines)


def error_line(source: str, path: str, e: dict) -> str:
    """One pydantic error as `source: key.path: reason (got value)`, each part of a bounded length."""
    msg = clipped(e["msg"].removeprefix("Value error, "), 400)
    path = clipped(path)
    got = e.get("input")
    echo = "" if isinstance(got, (dict, list)) or e["type"] == "missing" else f" (got {shown(got)})"
    if echo and isinstance(got, str) and shown(got) in msg:  # the check quoted it already: once per line
        echo = ""
    if path and msg.startswith((f"{path}.", f"{path}:")):  # a section's check names its own key
        path = ""
    return f"{source}: {path}: {msg}{echo}" if path else f"{source}: {msg}{echo}"


def parse_config(raw: dict, source: str = "<config>") -> RunConfig:
    """Validate a raw dict into a RunConfig, turning pydantic's errors into ConfigError lines."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config must be a mapping of sections, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, raw, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                raw: dict | None = None, smoke: bool = False) -> RunConfig:
    """Read a YAML recipe (or a raw dict), apply overrides, validate.

    The run name defaults to the recipe's file name, so `recipes/alpaca_lora.yaml` writes to
    `runs/alpaca_lora/`. `smoke=True` then applies the recipe's `smoke` section: its tiny model,
    its step count, its overrides, and the run folder `<name>-smoke`.
    """
    cfg = read_config(path, overrides, raw)
    if not smoke:
        return cfg
    quick = [f"model.name={cfg.smoke.model}", f"train.max_steps={cfg.smoke.max_steps}",
             f"output.name={cfg.output.name or 'run'}-smoke", *cfg.smoke.overrides]
    return read_config(path, [*(overrides or []), *quick], raw)


def read_config(path, overrides, raw, parse=parse_config):
    """Read, override, load plug-ins, name the output after the file, then `parse(raw, source)`."""
    source = str(path) if path is not None else "<config>"
    if raw is None:
        if path is None:
            raw = {}
        else:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"{source}: {not_a_file(p, 'config file')}")
            try:
                raw = yaml.load(p.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f"{source}:{mark.line + 1}" if mark else source
                raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
            except UnicodeDecodeError as e:
                raise ConfigError(f"{source}: not UTF-8 text ({e.reason})") from None
    raw = apply_overrides(copy.deepcopy(raw), overrides or [])
    if isinstance(raw, dict) and raw.get("plugins"):  # before validation: they add members to the unions
        from tunewright.plugins import load_plugins
        raw["plugins"] = load_plugins(raw["plugins"], Path(path).parent if path is not None else None,
                                      f"{source}: plugins")
    if isinstance(raw, dict) and path is not None:
        out = raw.setdefault("output", {}) if isinstance(raw.get("output", {}), dict) else raw.get("output")
        if isinstance(out, dict) and out.get("name") is None:
            out["name"] = Path(path).stem
    return parse(raw, source)


def not_a_file(path: Path, what: str) -> str:
    """Why `path` cannot be read as a `what`: missing, or a folder, a FIFO, a device (named)."""
    from tunewright.data.sources import path_kind  # imported late: sources.py imports this module

    try:
        kind = path_kind(path)
    except OSError as err:
        return f"cannot read the {what} ({err.strerror or err})"
    return f"no such {what}" if kind == "missing" else f"is {kind}, not a YAML file"


def as_run_config(config, overrides: list[str] | None = None) -> RunConfig:
    """A RunConfig from a YAML path, a dict or a RunConfig (+ dotted overrides), with its run name
    written in."""
    if isinstance(config, RunConfig):
        cfg = load_config(raw=config.model_dump(), overrides=overrides) if overrides else config
    elif isinstance(config, dict):
        cfg = load_config(raw=config, overrides=overrides)
    else:
        cfg = load_config(config, overrides)
    # Write the run name into the config: the saved config.yaml must reload to the same run folder
    # (left empty, reloading it would name the run after the file, "config").
    if cfg.output.name is None:
        cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"name": cfg.run_dir().name})})
    return cfg


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (every default written out), as saved in the run folder."""
    from tunewright.secrets import redact_tree
    return yaml.safe_dump(redact_tree(cfg.model_dump(mode="json")), sort_keys=False, allow_unicode=True)
