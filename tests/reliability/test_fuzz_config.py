"""Fuzzed configs (issue 7, point 5): >= 500 mutated configs through `load_config(raw=...)`.

Every key of every section is mistyped, given a value of the wrong type, and pushed past each of its
declared bounds; known conflicting options are combined. Each case must end in one `ConfigError`
whose message names the key path (and, for a typo, suggests the right key), never another exception.
The mutations are generated from the schema itself, so a key added later is fuzzed too.
"""

from __future__ import annotations

import copy
import difflib
import random
import re
import typing

import annotated_types as at
import pytest
from pydantic import BaseModel

from tunewright.config import (DataConfig, DataSource, EarlyStopping, EvalConfig, ModelConfig,
                               OutputConfig, RunConfig, SmokeConfig, TrainConfig, load_config)
from tunewright.data.tabular import TabularOptions
from tunewright.errors import ConfigError
from tunewright.models.methods import METHOD_CONFIGS
from tunewright.objectives import OBJECTIVE_CONFIGS, OBJECTIVES

BASE = {"data": {"datasets": [{"path": "train.jsonl"}]}}

# What a method needs besides its name to be valid on its own.
METHOD_NEEDS = {"selective": {"bias_only": True}}
# What an objective needs around it besides its name: its data formats, its own required settings.
OBJECTIVE_AROUND = {"classification": {"objective": {"name": "classification"},
                                       "data": {"datasets": [{"format": "classification"}]}},
                    "distill": {"objective": {"name": "distill", "teacher": "teacher-model"}},
                    "lwf": {"objective": {"name": "lwf", "teacher": "runs/before/final", "old_labels": ["a", "b"]},
                            "data": {"datasets": [{"format": "classification"}]}},
                    **{name: {"objective": {"name": name, "rewards": [{"function": "my_rewards:score"}]}}
                       for name in ("ppo", "grpo", "rloo")}}

def _objective_data(name: str) -> dict:
    """The data an objective needs to be valid: a source in the first format it reads (dpo: preference)."""
    formats = OBJECTIVES.get(name).FORMATS if name in OBJECTIVES else None
    return {"data": {"datasets": [{"format": formats[0]}]}} if formats else {}


# Where each section lives in a raw config: (path of keys, section class, raw needed around it).
SECTIONS: list[tuple[tuple, type[BaseModel], dict]] = [
    ((), RunConfig, {}),
    (("model",), ModelConfig, {}),
    (("data",), DataConfig, {}),
    (("data", "datasets", 0), DataSource, {}),
    (("data", "eval_datasets", 0), DataSource, {"data": {"eval_datasets": [{"path": "eval.jsonl"}]}}),
    (("train",), TrainConfig, {}),
    (("eval",), EvalConfig, {}),
    (("eval", "early_stopping"), EarlyStopping, {"eval": {"steps": 10, "early_stopping": {}}}),
    (("output",), OutputConfig, {}),
    (("smoke",), SmokeConfig, {}),
    *((("method",), cls, {"method": {"name": name, **METHOD_NEEDS.get(name, {})}})
      for name, cls in METHOD_CONFIGS.items()),
    *((("objective",), cls, OBJECTIVE_AROUND.get(name, {"objective": {"name": name}, **_objective_data(name)}))
      for name, cls in OBJECTIVE_CONFIGS.items()),
    (("data", "datasets", 0, "tabular"), TabularOptions,
     {"data": {"datasets": [{"format": "tabular", "tabular": {}}]}}),
]


def _merge(into: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        elif isinstance(v, list) and isinstance(into.get(k), list):
            into[k] = [_merge(a, b) if isinstance(a, dict) else b for a, b in zip(into[k], v)]
        else:
            into[k] = copy.deepcopy(v)
    return into


def _with(where: tuple, around: dict, key: str, value) -> dict:
    """BASE plus `around`, with `value` set at `where + (key,)`."""
    raw = _merge(copy.deepcopy(BASE), around)
    node = raw
    for part in where:
        if isinstance(part, int):
            node = node[part]
        else:
            node = node.setdefault(part, {})
    node[key] = value
    return raw


def _dotted(where: tuple, key: str) -> str:
    return ".".join(map(str, (*where, key)))


# ---------------------------------------------------------------- mutations

def _typos(key: str, rng: random.Random) -> list[str]:
    """Three single-edit typos: a dropped, a doubled and a swapped (or replaced) letter."""
    i = rng.randrange(len(key))
    out = [key[:i] + key[i] + key[i:]]  # doubled
    if len(key) > 3:
        out.append(key[:i] + key[i + 1:])  # dropped
    j = rng.randrange(len(key) - 1) if len(key) > 1 else 0
    swapped = key[:j] + key[j + 1:j + 2] + key[j] + key[j + 2:]
    out.append(swapped if swapped != key else key + "s")
    return out


def _wrong_values(annotation) -> list:
    """Values no member of `annotation` accepts."""
    args = set(typing.get_args(annotation)) or {annotation}
    names = {getattr(a, "__name__", str(a)) for a in args} | {str(annotation)}
    text = " ".join(names)
    out = []
    if "str" not in text and "Literal" not in text:
        out.append("not-a-value")
    if "list" not in text:
        out.append([1, 2])
    if "dict" not in text and not any(isinstance(a, type) and issubclass(a, BaseModel) for a in args):
        out.append({"x": {"y": 1}})
    if "Literal" in text and "list" not in text:
        out.append("zz_no_such_option")
    if "list" in text:
        out.append([{"nested": 1}])
    if "dict" in text:
        out.append({"x": [1]})
    return out


def _out_of_range(field) -> list:
    out = []
    for m in field.metadata:
        if isinstance(m, at.Gt):
            out += [m.gt, m.gt - 1]
        elif isinstance(m, at.Ge):
            out += [m.ge - 1, m.ge - 0.5 if isinstance(m.ge, float) else m.ge - 2]
        elif isinstance(m, at.Lt):
            out += [m.lt, m.lt + 1]
        elif isinstance(m, at.Le):
            out += [m.le + 0.5, m.le + 10]
        elif isinstance(m, at.MinLen):
            out += [[]]
    return out


def _skip(cls, key: str) -> bool:
    # the union tag picks the section class: another value is an unknown method, fuzzed below
    return cls in METHOD_CONFIGS.values() and key == "name"


def config_cases(seed: int = 7) -> list[tuple[str, dict, str, tuple | None]]:
    """(case id, raw config, key path the message must name, for a typo (typo, key, section keys))."""
    rng = random.Random(seed)
    cases = []
    for where, cls, around in SECTIONS:
        fields = cls.model_fields
        for key, field in fields.items():
            path = _dotted(where, key)
            for typo in _typos(key, rng):
                if typo in fields:
                    continue
                value = field.get_default(call_default_factory=True) if not field.is_required() else "x"
                if isinstance(value, BaseModel):
                    value = {}
                cases.append((f"typo {_dotted(where, typo)}", _with(where, around, typo, value),
                              _dotted(where, typo), (typo, key, tuple(fields))))
            if _skip(cls, key):
                continue
            for value in _wrong_values(field.annotation):
                cases.append((f"type {path}={value!r}", _with(where, around, key, value), path, None))
            for value in _out_of_range(field):
                cases.append((f"range {path}={value!r}", _with(where, around, key, value), path, None))
    cases += [(f"conflict {name}", raw, path, None) for name, raw, path in CONFLICTS]
    return cases


CONFLICTS = [
    ("packing with an encoder-decoder objective",
     {**BASE, "data": {**BASE["data"], "packing": True}, "objective": {"name": "seq2seq"}}, "data.packing"),
    ("eval_datasets with val_set_size",
     {"data": {**BASE["data"], "val_set_size": 0.1, "eval_datasets": [{"path": "e.jsonl"}]}}, "data.eval_datasets"),
    ("warmup_steps with warmup_ratio", {**BASE, "train": {"warmup_steps": 10, "warmup_ratio": 0.1}}, "train.warmup"),
    ("packing with group_by_length", {"data": {**BASE["data"], "packing": True, "group_by_length": True}},
     "data.group_by_length"),
    ("min_lr_ratio without cosine", {**BASE, "train": {"min_lr_ratio": 0.1}}, "train.min_lr_ratio"),
    ("batch not a multiple of micro batch", {**BASE, "train": {"batch_size": 6, "micro_batch_size": 4}},
     "train.batch_size"),
    ("early stopping without eval steps", {**BASE, "eval": {"early_stopping": {}}}, "eval.early_stopping"),
    ("load_best without eval steps", {**BASE, "eval": {"load_best": True}}, "eval.load_best"),
    ("metrics with labels", {**BASE, "eval": {"metrics": ["exact_match"], "labels": ["a", "b"]}}, "eval.metrics"),
    ("one label", {**BASE, "eval": {"labels": ["a"]}}, "eval.labels"),
    ("weighted eval source", {"data": {**BASE["data"], "eval_datasets": [{"path": "e.jsonl", "weight": 2}]}},
     "data.eval_datasets.0.weight"),
    ("unknown method", {**BASE, "method": {"name": "lroa"}}, "method.name"),
    ("unknown data format", {"data": {"datasets": [{"path": "t.jsonl", "format": "alpacca"}]}},
     "data.datasets.0.format"),
    ("4 and 8 bits at once", {**BASE, "model": {"load_in_4bit": True, "load_in_8bit": True}}, "model.load_in_4bit"),
    ("no datasets", {"data": {"datasets": []}}, "data.datasets"),
    ("run name escapes", {**BASE, "output": {"name": "../x"}}, "output.name"),
]

CASES = config_cases()


def _suggests(msg: str, hint: tuple | None) -> bool:
    """A typo's message suggests the intended key, or another key of the section just as close."""
    if hint is None:
        return True
    typo, key, fields = hint
    said = re.search(r'did you mean "([^"]+)"\?', msg)
    if not said or said.group(1) not in fields:
        return False
    ratio = lambda k: difflib.SequenceMatcher(None, typo, k).ratio()  # noqa: E731
    return ratio(said.group(1)) >= ratio(key)


def test_there_are_enough_cases_of_each_kind(tally):
    kinds = {}
    for case_id, *_ in CASES:
        kinds[case_id.split()[0]] = kinds.get(case_id.split()[0], 0) + 1
    assert len(CASES) >= 500 and min(kinds.values()) >= len(CONFLICTS), kinds
    tally("config fuzz cases", len(CASES))


@pytest.mark.parametrize("chunk", range(4))
def test_every_mutated_config_is_one_clean_error_naming_the_key(chunk):
    failures = []
    for case_id, raw, path, hint in CASES[chunk::4]:
        try:
            load_config(raw=raw)
        except ConfigError as err:
            msg = str(err)
            if path not in msg or not _suggests(msg, hint) or not msg.startswith("<config>: "):
                failures.append(f"{case_id}: message {msg!r} lacks {path!r} / {hint!r}")
        except Exception as err:  # noqa: BLE001 - the point is that nothing else escapes
            failures.append(f"{case_id}: raised {type(err).__name__}: {err}")
        else:
            failures.append(f"{case_id}: accepted")
    assert not failures, f"{len(failures)} bad:\n" + "\n".join(failures[:40])


def test_the_unmutated_base_config_is_accepted():
    # otherwise every case above would pass for the wrong reason
    for _, cls, around in SECTIONS:
        load_config(raw=_merge(copy.deepcopy(BASE), around))
