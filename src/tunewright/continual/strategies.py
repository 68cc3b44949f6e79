"""The strategies a sequence is trained with, keyed by the names users write (`--strategies`).

A strategy changes each task's run config and nothing else: it is a regularizer (regularizers/),
a data mixture (replay, joint, generative_replay), an objective (lwf: objectives/lwf.py), a new
adapter per task (adapters) or nothing (naive). The sequence (continual/sequence.py) builds each
task's run config, hands it to `changes` and trains it through run.py. The surface, per strategy:

    changes(raw, settings, ctx) -> raw     the task's run config (a dict) as this strategy trains it
    task_identity                          True when evaluation uses the row's task (adapters)

Optional (the default: the task's final/ scores every task; only the strategy's own files count):

    misfit(cfg) -> str | None              why the continual config cannot be trained this way,
                                           asked before anything trains
    load(cfg, ctx) -> (model, tokenizer, route)   the model R's row i is scored with, and
                                           route(task) a context in which it answers for `task`
    kept(folder, cfg) -> [Path]            what it keeps beyond one model (its cost in bytes)

What a strategy keeps between tasks is on disk, where the next task's `changes` reads it: a
regularizer's state in the previous final/regularizers/, replay's buffer rebuilt from the earlier
tasks' rows (seeded, so a resumed sequence gets the same one).

`settings` is the strategy's section of the continual config (`strategies.<name>`), or None.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path

from tunewright.continual import generative, replay
from tunewright.errors import ConfigError
from tunewright.registry import Registry

__all__ = ["STRATEGIES", "PLANNED_STRATEGIES", "TaskContext", "strategy"]


@dataclass
class TaskContext:
    index: int  # the task's place in the sequence, from 0
    cfg: object  # the ContinualConfig
    folder: Path  # <output.dir>/<output.name>/<strategy>/
    previous: Path | None  # the previous task's final/, None for the first task

    @property
    def task(self):
        return self.cfg.tasks[self.index]

    @property
    def run_dir(self) -> Path:
        return self.folder / f"{self.index}-{self.task.name}"


def _naive(raw: dict, settings, ctx: TaskContext) -> dict:
    return raw


def _joint(raw: dict, settings, ctx: TaskContext) -> dict:
    """Every task so far mixed (the upper reference): task i trains on the data of tasks 0..i,
    continuing from task i-1's weights."""
    raw["data"]["datasets"] = [s.model_dump() for t in ctx.cfg.tasks[:ctx.index + 1] for s in t.datasets]
    return raw


def _regularizer(name: str):
    """A regularizer strategy: the regularizer on every task, reading the previous task's state."""
    def changes(raw: dict, settings, ctx: TaskContext) -> dict:
        item = settings.model_dump()
        if "previous" in item and ctx.previous is not None:
            item["previous"] = str(ctx.previous / "regularizers")
        raw["regularizers"] = [item]
        return raw
    return types.SimpleNamespace(changes=changes, task_identity=False)


def _old_labels(ctx: TaskContext) -> list[str]:
    """The classes of the tasks before this one, in order."""
    return list(dict.fromkeys(label for t in ctx.cfg.tasks[:ctx.index] for label in t.labels))


def _lwf_changes(raw: dict, settings, ctx: TaskContext) -> dict:
    """Task i > 0 trains the lwf objective (objectives/lwf.py): the labels' loss plus the old classes'
    logits distilled from the previous task's final/ (the model before this task), frozen. The first
    task has no earlier model: it trains as naive."""
    if ctx.previous is None:
        return raw
    raw["objective"] = {**raw["objective"], "name": "lwf", "teacher": str(ctx.previous),
                        "old_labels": _old_labels(ctx), **settings.model_dump()}
    return raw


def _generative_changes(raw: dict, settings, ctx: TaskContext) -> dict:
    """Task i > 0: pseudo-rows sampled from and labelled by task i-1's final/ (continual/generative.py),
    written as generative-<i>.jsonl and mixed in at `ratio` as replay's buffer is."""
    if ctx.index == 0:
        return raw
    rows = generative.pseudo_rows(ctx.previous, ctx.cfg.model, _old_labels(ctx), settings,
                                  ctx.cfg.train.seed * 10_000 + ctx.index, ctx.cfg.data.cutoff_len)
    raw["data"]["datasets"].append(replay.write_source({"rows": [{"task": "generated", "row": r} for r in rows]},
                                                       ctx.folder / f"generative-{ctx.index}.jsonl", "classification",
                                                       len(_rows_of(ctx.task)), settings.ratio))
    return raw


def _adapters_misfit(cfg) -> str | None:
    from tunewright.models.adapters import shares_a_base
    from tunewright.models.methods import METHODS

    if not shares_a_base(METHODS.get(cfg.method.name)):
        return (f"method.name: strategy adapters trains one PEFT adapter per task on one base (lora, ia3, prompt, "
                f"prefix); {cfg.method.name!r} is not one")
    return None


def _adapters_changes(raw: dict, settings, ctx: TaskContext) -> dict:
    """Each task a new adapter on the base (not the previous task's trained on): its own seeded
    adapter and, the head being in the adapter's modules_to_save, its own copy of the head."""
    raw["method"].pop("init_from", None)
    return raw


def _adapter_names(cfg, index: int) -> dict[str, str]:
    """{task name: its adapter's name on the shared base} for tasks 0..index (names peft can key on)."""
    return {t.name: f"task{k}" for k, t in enumerate(cfg.tasks[:index + 1])}


def _adapters_load(cfg, ctx: TaskContext):
    """Every adapter trained so far on one base, each under its task; a task's rows go to its own
    adapter (the task identity, used at test time), a task not trained yet to the latest one."""
    from tunewright.models.adapters import active, load_adapters

    names = _adapter_names(cfg, ctx.index)
    model, tokenizer = load_adapters({names[t.name]: str(ctx.folder / f"{k}-{t.name}" / "final")
                                      for k, t in enumerate(cfg.tasks[:ctx.index + 1])})
    latest = names[ctx.task.name]
    return model, tokenizer, lambda task: active(model, names.get(task.name, latest))


def _adapters_kept(folder: Path, cfg) -> list[Path]:
    """The earlier tasks' adapters (with their heads), kept for the routed model: one per task beyond one."""
    return [folder / f"{k}-{t.name}" / "final" / "adapter_model.safetensors" for k, t in enumerate(cfg.tasks[:-1])]


def _rows_of(task) -> list[dict]:
    """The raw rows of a task's training files (replay writes them back as they were read)."""
    rows = []
    for src in task.datasets:
        path = Path(src.path)
        if path.suffix != ".jsonl" or not path.is_file():
            raise ConfigError(f"tasks.{task.name}.datasets: replay reads local .jsonl files; {src.path} is not one")
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def _buffer_before(settings, ctx: TaskContext) -> dict:
    """The buffer after tasks 0..i-1, rebuilt from their rows (seeded, so a resumed sequence gets the
    same one) and saved beside the runs as replay-<i>.json (its bytes are replay's cost)."""
    buffer = replay.empty()
    for t in ctx.cfg.tasks[:ctx.index]:
        buffer = replay.update(buffer, t.name, _rows_of(t), settings, ctx.cfg.train.seed)
    return buffer


def _replay_changes(raw: dict, settings, ctx: TaskContext) -> dict:
    if ctx.index == 0:
        return raw
    buffer = _buffer_before(settings, ctx)
    replay.save(buffer, ctx.folder / f"replay-{ctx.index}.json")
    first = ctx.task.datasets[0]
    source = replay.write_source(buffer, ctx.folder / f"replay-{ctx.index}.jsonl", first.format,
                                 len(_rows_of(ctx.task)), settings.ratio)
    raw["data"]["datasets"].append({**source, "columns": first.columns})
    return raw


STRATEGIES: Registry = Registry("strategy")
STRATEGIES.register("naive", types.SimpleNamespace(changes=_naive, task_identity=False))
STRATEGIES.register("joint", types.SimpleNamespace(changes=_joint, task_identity=False))
for _name in ("ewc", "si", "mas", "l2_sp"):
    STRATEGIES.register(_name, _regularizer(_name))
STRATEGIES.register("replay", types.SimpleNamespace(changes=_replay_changes, task_identity=False))
STRATEGIES.register("lwf", types.SimpleNamespace(changes=_lwf_changes, task_identity=False))
STRATEGIES.register("generative_replay", types.SimpleNamespace(changes=_generative_changes, task_identity=False,
                                                               kept=lambda folder, cfg: [*folder.glob("generative-*")]))
STRATEGIES.register("adapters", types.SimpleNamespace(changes=_adapters_changes, task_identity=True,
                                                      misfit=_adapters_misfit, load=_adapters_load,
                                                      kept=_adapters_kept))

# Names users will reach for that are not built: refused with this message, not "unknown"
PLANNED_STRATEGIES = {"progressive": "not built (progressive or expandable networks; per-task adapters, `adapters`, "
                                      "stand for isolation)"}


def strategy(name: str):
    """The strategy `name`; a planned one is refused with what is missing, an unknown one with did-you-mean."""
    if name in PLANNED_STRATEGIES:
        raise ConfigError(f"--strategies: {name!r} is {PLANNED_STRATEGIES[name]}; built: {', '.join(STRATEGIES.names())}")
    return STRATEGIES.get(name)
