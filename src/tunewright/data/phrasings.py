"""Instruction phrasings and few-shot examples per source, as FLAN mixes its tasks.

    data.datasets[].phrasings   templates of the user turn with {instruction} and {input}, or the
                                name of a built-in set (a lab task: lab/phrasings.py)
    data.datasets[].shots       in-context example counts, e.g. [0, 2]: each row is zero-shot or
                                2-shot (FLAN, Chung et al. 2022, trains on both)

Each row draws its template and its shot count with its own seeded stream, made from `train.seed`
and the row's source and line (`random.Random` of a string hashes it with SHA-512, not Python's
`hash()`), so the choice is the same in every run and process and does not move when rows are
added elsewhere in the file. A k-shot row is preceded by k other rows of the same source's
training rows (never the row itself nor a copy of it), phrased with the same template, as earlier
user/assistant turns whose replies carry no loss. `Example.meta` records the choice
(`phrasing`: 1-based template number, `shots`, `exemplars`: their lines); the validation report
prints it per example and the cache key covers it.

This is not `data.template`, the chat template that renders the turns into tokens.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunewright.data.types import Example, Message
from tunewright.errors import DataError

if TYPE_CHECKING:  # annotations only: the schema imports this package
    from tunewright.schema import DataSource

__all__ = ["PLACEHOLDERS", "PhrasingCounts", "builtin_sets", "check_template", "templates_of", "phrase_rows",
           "apply_template", "exemplar_turns"]

PLACEHOLDERS = ("instruction", "input")


def builtin_sets() -> dict[str, tuple[str, ...]]:
    """Named phrasing sets, one per lab instruction task."""
    from tunewright.lab.phrasings import PHRASING_SETS  # data only: lab.phrasings imports nothing

    return PHRASING_SETS


def check_template(text: str) -> str | None:
    """Why `text` is not a usable phrasing (None when it is): placeholders must be {instruction} or
    {input}, at least one of them (else the row's content would be lost); `{{`/`}}` write braces."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as e:  # a lone "{" or "}"
        return f"{e} (write a literal brace as {{{{ or }}}})"
    for name, spec, conv in fields:
        if name not in PLACEHOLDERS or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            return f"unknown placeholder {shown}; placeholders: {{instruction}}, {{input}}"
    if not fields:
        return "names neither {instruction} nor {input}: every row would lose its content"
    return None


def templates_of(src: DataSource) -> tuple[str, ...]:
    """The source's phrasing templates: its list, or the built-in set it names; () for none."""
    if src.phrasings is None:
        return ()
    return tuple(src.phrasings) if isinstance(src.phrasings, list) else builtin_sets()[src.phrasings]


def apply_template(template: str, turn: Message) -> Message:
    """The user turn written through `template`. Its input fills {input}; a template without
    {input} leaves the input as the turn's context, where the chat template puts it."""
    context = turn.context or ""
    places_input = any(name == "input" for _, name, _, _ in string.Formatter().parse(template))
    text = template.format(instruction=turn.content, input=context).strip()
    return Message("user", text, train=turn.train, context=None if places_input else turn.context)


@dataclass
class PhrasingCounts:
    """How often each template and shot count was drawn for one source (printed in the data report)."""

    templates: int = 0
    chosen: Counter = field(default_factory=Counter)  # 1-based template number -> rows
    shots: Counter = field(default_factory=Counter)  # k -> rows

    def line(self, path: str) -> str:
        parts = []
        if self.templates:
            parts.append(f"{self.templates} phrasings, rows per phrasing "
                         + " ".join(str(self.chosen[i]) for i in range(1, self.templates + 1)))
        if set(self.shots) != {0}:
            parts.append("shots " + ", ".join(f"{k}: {n}" for k, n in sorted(self.shots.items())))
        return f"{path}: {'; '.join(parts)}"


def _last_turns(example: Example) -> tuple[int, int]:
    """Indices of the final user turn and the assistant reply after it."""
    reply = max(i for i, m in enumerate(example.messages) if m.role == "assistant")
    users = [i for i, m in enumerate(example.messages[:reply]) if m.role == "user"]
    if not users:
        raise DataError(example.source, example.line, "phrasings", "no user turn before the reply to phrase")
    return users[-1], reply


def exemplar_turns(exemplars: list[Example], template: str | None) -> list[Message]:
    """In-context examples as earlier turns: each one's last user turn (through `template`) and its
    reply, which carries no loss (the model learns the row's answer, not the examples')."""
    turns = []
    for ex in exemplars:
        user, reply = _last_turns(ex)
        turn = ex.messages[user]
        turns += [apply_template(template, turn) if template else Message("user", turn.content, context=turn.context),
                  Message("assistant", ex.messages[reply].content, train=False)]
    return turns


def _content(ex: Example) -> tuple:
    return tuple((m.role, m.content, m.context) for m in ex.messages or ())


def _rng(seed: int, what: str, ex: Example) -> random.Random:
    return random.Random(f"tunewright-{what}-{seed}-{ex.source}-{ex.line}")


def _pick_exemplars(row: Example, pool: list[Example], k: int, rng: random.Random) -> list[Example]:
    """k rows of `pool` other than `row` and its copies, in a seeded order (fewer when the pool is short)."""
    if not k:
        return []
    same = _content(row)
    # draw a few spare indices instead of filtering the whole pool for every row (O(k), not O(n))
    draw = rng.sample(range(len(pool)), min(len(pool), k + 4))
    picked = [pool[j] for j in draw if (pool[j].source, pool[j].line) != (row.source, row.line)
              and _content(pool[j]) != same][:k]
    if len(picked) < k and len(draw) < len(pool):  # many copies of this row: look through all of them
        drawn = set(draw)
        rest = [j for j in range(len(pool)) if j not in drawn]
        rng.shuffle(rest)
        picked += [pool[j] for j in rest if (pool[j].source, pool[j].line) != (row.source, row.line)
                   and _content(pool[j]) != same][:k - len(picked)]
    return picked


def phrase_rows(rows: list[Example], pool: list[Example], src: DataSource, seed: int,
                counts: PhrasingCounts | None = None) -> list[Example]:
    """`rows` with their final user turn phrased and their few-shot examples (drawn from `pool`,
    the source's unphrased training rows) in front; the originals are left as they were."""
    templates = templates_of(src)
    if counts is not None:
        counts.templates = len(templates)
    out = []
    for row in rows:
        if row.messages is None:
            raise DataError(row.source, row.line, "phrasings",
                            f"format {src.format} gave raw text here: phrasings and shots need an instruction turn")
        user, _ = _last_turns(row)
        meta = dict(row.meta)
        template = None
        if templates:
            pick = _rng(seed, "phrasing", row).randrange(len(templates))
            template, meta["phrasing"] = templates[pick], pick + 1
        rng = _rng(seed, "shots", row)
        k = rng.choice(src.shots)
        exemplars = _pick_exemplars(row, pool, k, rng)
        if src.shots != [0]:
            meta["shots"] = len(exemplars)
            meta["exemplars"] = [ex.line for ex in exemplars]
        turns = list(row.messages)
        if template:
            turns[user] = apply_template(template, turns[user])
        # in-context examples go after a system turn (which must stay first) and before any history
        at = 1 if turns[0].role == "system" else 0
        turns[at:at] = exemplar_turns(exemplars, template)
        out.append(Example(row.source, row.line, messages=turns, meta=meta))
        if counts is not None:
            counts.chosen[meta.get("phrasing", 0)] += 1
            counts.shots[len(exemplars)] += 1
    return out
