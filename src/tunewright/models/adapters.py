"""Several adapters on one base model, switched per request or switched off; LoRA adapters combined.

    parse_adapters(["a=runs/a", "runs/b/final"])   {"a": "runs/a", "b": "runs/b/final"}: NAME=PATH, or a
                                                 name taken from the folder (its run's for .../final)
    load_adapters(named, dtype, base)            (model, tokenizer): the base loaded once, each adapter
                                                 put on it under its name (peft's named adapters)
    active(model, name)                          a context in which `name` answers; BASE switches
                                                 every adapter off (the base model's logits exactly)
    combine(named, weights, how, out, ...)       LoRA adapters -> one new adapter (peft's
                                                 `add_weighted_adapter`): linear, cat or svd

Adapters share a base only when they are of one PEFT method (a method whose `load_for_inference`
takes `adapter_name`: lora, ia3, prompt, prefix) and were trained on the same base; a
bottleneck adapter or a whole model loads alone (models/trained.py `load_trained`).
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path

from tunewright.errors import ConfigError

__all__ = ["BASE", "COMBINATIONS", "parse_adapters", "adapter_name", "shares_a_base", "load_adapters", "active",
           "combine", "open_for_answers"]

BASE = "base"  # the name that switches every adapter off
COMBINATIONS = ("linear", "cat", "svd")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def adapter_name(path: str) -> str:
    """A folder's name for tables and switches: the folder's, or its run's for `.../final`."""
    p = Path(path.rstrip("/\\") or path)
    return (p.parent.name if p.name == "final" and p.parent.name else p.name) or "adapter"


def parse_adapters(values: list[str], field: str = "--adapter") -> dict[str, str]:
    """`NAME=PATH` or `PATH` items -> {name: path}, in the order given; names must be unique and not
    `base` (which means "adapters off")."""
    named: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not _NAME.match(name):  # a path that holds '=' is a path
            name, path = adapter_name(value), value
        if name == BASE:
            raise ConfigError(f"{field}: {BASE!r} names the base model (adapters off); name the adapter otherwise "
                              f"(NAME=PATH)")
        if name in named:
            raise ConfigError(f"{field}: two adapters are named {name!r}; name them apart with NAME=PATH")
        named[name] = path
    return named


def shares_a_base(method) -> bool:
    """Whether `method`'s adapters load several to a base (its load_for_inference takes adapter_name)."""
    return "adapter_name" in inspect.signature(method.load_for_inference).parameters


def load_adapters(named: dict[str, str], dtype: str = "float32", base: str | None = None):
    """(model in eval mode, tokenizer) with every adapter of `named` on one base, the first active.
    The base is `base`, else the one the adapters record (they must agree)."""
    from tunewright.models.trained import (base_name_of, import_plugins, load_base, method_of, recorded_head,
                                           resolve_trained, use_generation_config)

    folders = {name: resolve_trained(path) for name, path in named.items()}
    methods = {}
    for name, folder in folders.items():
        import_plugins(folder)
        methods[name] = method_of(folder)
    kinds = sorted({m for m, _ in methods.values()})
    if len(kinds) > 1:
        listed = ", ".join(f"{n} is {m}" for n, (m, _) in methods.items())
        raise ConfigError(f"--adapter: adapters on one base must be of one method ({listed}); load them one at a time")
    kind, method = next(iter(methods.values()))
    if not shares_a_base(method):
        raise ConfigError(f"--adapter: {kind} folders load one to a base; several adapters on one base are PEFT "
                          f"adapters (lora, ia3, prompt, prefix)")
    bases = {name: base_name_of(folder, base) for name, folder in folders.items()}
    if len(set(bases.values())) > 1:
        listed = ", ".join(f"{n} on {b!r}" for n, b in bases.items())
        raise ConfigError(f"--adapter: the adapters were trained on different bases ({listed}); pass --base to "
                          f"choose one if they fit it")
    first = next(iter(folders.values()))
    # the head the runs trained (a classifier's, each adapter holding its own copy of it) and its classes
    heads = {name: recorded_head(folder) for name, folder in folders.items()}
    if len({json.dumps(h, sort_keys=True) for h in heads.values()}) > 1:
        listed = ", ".join(f"{n}: {h[0] or 'its own'} {h[1].get('id2label', '')}".rstrip() for n, h in heads.items())
        raise ConfigError(f"--adapter: the adapters were trained with different heads or classes ({listed}); load "
                          f"them one at a time")
    model, tokenizer = load_base(first, dtype, base, *heads[next(iter(folders))])
    for name, folder in folders.items():
        model = method.load_for_inference(model, folder, adapter_name=name)
    model.set_adapter(next(iter(folders)))
    use_generation_config(model, first)
    return model.eval(), tokenizer


def active(model, name: str):
    """A context in which adapter `name` answers; BASE: every adapter off. Other names are refused
    with the loaded ones listed."""
    if name == BASE:
        return model.disable_adapter()
    loaded = list(getattr(model, "peft_config", {}))
    if name not in loaded:
        raise ConfigError(f"no adapter named {name!r}; loaded: {', '.join(loaded)} (or {BASE!r}: adapters off)")
    model.set_adapter(name)
    return nullcontext()


# ---------------------------------------------------------------- combining LoRA adapters

@contextmanager
def _staging(out: Path):
    tmp = out.parent / f".{out.name}.combining"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def combine(named: dict[str, str], weights: list[float], how: str, out, *, base: str | None = None,
            rank: int | None = None) -> Path:
    """One new LoRA adapter from several (peft's `add_weighted_adapter`), written to `out` (new or
    empty) in PEFT format with the first adapter's tokenizer and a run record naming the base.

        linear  B = sum_i sqrt(w_i s_i) B_i, A likewise: the same rank for every adapter; weights
                (1, 0) give the first adapter back
        cat     A = [A_1; A_2; ...], B = [w_1 s_1 B_1, w_2 s_2 B_2, ...]: rank sum r_i, and the
                update is exactly sum_i w_i dW_i
        svd     sum_i w_i dW_i truncated to `rank` (default the largest r_i) by SVD
    """
    from tunewright.models.merge import new_folder
    from tunewright.models.trained import base_name_of, resolve_trained

    if how not in COMBINATIONS:
        raise ConfigError(f"adapters combine --how: {how!r}; choose one of {', '.join(COMBINATIONS)}")
    if len(named) < 2:
        raise ConfigError("adapters combine: give at least two adapters")
    if len(weights) != len(named):
        raise ConfigError(f"adapters combine --weights: {len(weights)} weights for {len(named)} adapters")
    out = new_folder(Path(out))
    model, tokenizer = load_adapters(named, base=base)
    if type(model.peft_config[next(iter(named))]).__name__ != "LoraConfig":
        raise ConfigError("adapters combine: only LoRA adapters combine (a weighted sum of low-rank updates)")
    ranks = {n: model.peft_config[n].r for n in named}
    if how == "linear" and len(set(ranks.values())) > 1:
        raise ConfigError(f"adapters combine --how linear: needs one rank, the adapters have {ranks}; use cat or svd")
    kwargs = {"svd_rank": rank or max(ranks.values())} if how == "svd" else {}
    try:
        model.add_weighted_adapter(list(named), list(weights), "combined", combination_type=how, **kwargs)
    except ValueError as err:
        raise ConfigError(f"adapters combine: peft refused: {str(err).splitlines()[0]}") from None
    with _staging(out) as tmp:
        model.save_pretrained(str(tmp), selected_adapters=["combined"])  # peft writes a non-default one to tmp/<name>
        tokenizer.save_pretrained(str(tmp / "combined"))
        first = resolve_trained(next(iter(named.values())))
        record = {"method": "lora", "base_model": base_name_of(first, base), "combined_from": dict(named),
                  "weights": list(weights), "combination": how}
        (tmp / "combined" / "tunewright.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty, checked above
        shutil.move(str(tmp / "combined"), str(out))
    return out


# ---------------------------------------------------------------- what generate, chat and eval open

def open_for_answers(path: str | None, adapters: list[str], base: str | None, dtype: str = "float32"):
    """(model, tokenizer, {name: run record}) for `generate` and `chat`.

    Without `adapters`: `path` as today (a run, an adapter or a model folder; `base` for an
    adapter's base) under the name None. With them: every adapter on one base (`path` or `base`
    names it; by default the one the adapters record), each under its name, the first active."""
    from tunewright.models.trained import load_trained, run_record

    if not adapters:
        if path is None:
            raise ConfigError("give a run, adapter or model folder, or --adapter")
        model, tokenizer = load_trained(path, dtype=dtype, base=base)
        return model, tokenizer, {None: run_record(path)}
    if path is not None and base is not None:
        raise ConfigError(f"with --adapter, name the base once: as the argument ({path!r}) or --base ({base!r})")
    named = parse_adapters(adapters)
    model, tokenizer = load_adapters(named, dtype, path or base)
    return model, tokenizer, {name: run_record(folder) for name, folder in named.items()}
