"""The lab's task data: a registry of generators drawing train/validation/test rows from the
synthetic world (`tunewright.lab.world`), in the project's row formats.

    name              rows                                             format (data.datasets[].format)
    pretraining_text  {text}                                           text
    world_qa          {instruction, input, output} or {messages}       alpaca / messages (fmt=...)
    arithmetic        same                                             alpaca / messages
    string_skills     same                                             alpaca / messages
    dialogue_summary  same                                             alpaca / messages
    extraction        same                                             alpaca / messages
    sentiment         {text, label}                                    classification
    topic             {text, label}                                    classification
    preferences       {prompt, chosen, rejected, rejected_kind}        preference
    recommendation    {user, domain, liked, disliked, candidate, label, prompt}   classification (text: prompt)
    ratings           {user, item, domain, rating, time}               ratings (`tunewright data ratings` input)
    tabular           {area_m2, ..., target}                           tabular

Every entry is `f(seed=0, n_train=..., n_val=..., n_test=..., **options) -> {"train": rows,
"validation": rows, "test": rows}`, deterministic in its arguments; `make_task` checks the options
first, so a typo gets "did you mean" instead of a TypeError.
"""

from __future__ import annotations

import inspect
from typing import Callable

from tunewright.errors import ConfigError
from tunewright.lab.splits import Splits
from tunewright.lab.tasks_applied import preferences, ratings, recommendation, tabular
from tunewright.lab.tasks_classify import sentiment, topic
from tunewright.lab.tasks_instruct import arithmetic, dialogue_summary, extraction, string_skills, world_qa
from tunewright.lab.tasks_text import pretraining_text
from tunewright.registry import Registry, suggest

__all__ = ["TASKS", "make_task", "task_format", "task_options"]

Task = Callable[..., Splits]

TASKS: Registry[Task] = Registry("lab task")
for _task in (pretraining_text, world_qa, arithmetic, string_skills, dialogue_summary, extraction, sentiment, topic,
              preferences, recommendation, ratings, tabular):
    TASKS.register(_task.__name__, _task)

# The row format of each task when it does not take `fmt` (instruction tasks answer with their `fmt`).
_FORMATS = {"pretraining_text": "text", "sentiment": "classification", "topic": "classification",
            "preferences": "preference", "recommendation": "classification", "tabular": "tabular",
            "ratings": "none (ratings: `tunewright data ratings` turns them into classification rows)"}


def task_options(name: str) -> dict[str, object]:
    """The options task `name` accepts, with their defaults (seed and split sizes included)."""
    return {p.name: p.default for p in inspect.signature(TASKS.get(name)).parameters.values()}


def task_format(name: str, fmt: str | None = None) -> str:
    """The format name (as written in `data.datasets[].format`) of the rows `name` generates."""
    options = task_options(name)  # ConfigError with did-you-mean on an unknown task
    return _FORMATS[name] if name in _FORMATS else fmt or options["fmt"]


def make_task(name: str, seed: int = 0, **options) -> Splits:
    """Generate task `name`'s splits; unknown task or option names raise ConfigError with did-you-mean."""
    known = task_options(name)
    for key in options:
        if key not in known:
            raise ConfigError(f"lab task {name}: unknown option {key!r}{suggest(key, known)}; "
                              f"options: {', '.join(known)}")
    return TASKS.get(name)(seed=seed, **options)
