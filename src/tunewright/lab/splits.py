"""How the lab's task generators assemble their train/validation/test splits and instruction rows.

`draw_splits` calls a row maker until each split holds the asked number of distinct rows. The rows
of a split are drawn from that split's own entities (`world.partition`), and an input already drawn
for an earlier split is never drawn again, so no test input appears in training. Each split has its
own random stream (`task:seed:split`), so asking for more training rows leaves the test rows of
entity-held-out tasks as they were.
"""

from __future__ import annotations

import random
from typing import Callable, Hashable

from tunewright.errors import ConfigError
from tunewright.lab.world import SPLITS
from tunewright.registry import suggest

__all__ = ["Splits", "INSTRUCT_FORMATS", "draw_splits", "instruct_row", "input_key", "check_fmt"]

Splits = dict[str, list[dict]]  # {"train": rows, "validation": rows, "test": rows}

INSTRUCT_FORMATS = ("alpaca", "messages")

# Tries per asked row before giving up: a generator that keeps repeating itself has run out of
# distinct inputs for this world size, and the user should hear so rather than wait.
_TRIES_PER_ROW = 50


def draw_splits(task: str, seed: int, sizes: dict[str, int],
                make: Callable[[str, random.Random], tuple[Hashable, dict]]) -> Splits:
    """`{split: rows}` with `sizes[split]` rows from `make(split, rng) -> (key, row)`, where `key`
    identifies the row's input (a problem, a sentence) and is unique across all splits.
    ConfigError when the world cannot supply that many distinct inputs."""
    seen: set = set()
    out: Splits = {}
    for split in SPLITS:
        n = sizes[split]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"lab task {task}: n_{_short(split)}: expected a count >= 0, got {n!r}")
        rng = random.Random(f"{task}:{seed}:{split}")
        rows: list[dict] = []
        for _ in range(_TRIES_PER_ROW * n + 100):
            if len(rows) == n:
                break
            k, row = make(split, rng)
            if k not in seen:
                seen.add(k)
                rows.append(row)
        if len(rows) < n:
            raise ConfigError(f"lab task {task}: n_{_short(split)}: found only {len(rows)} distinct {split} rows "
                              f"of the {n} asked; ask for fewer or use a larger world (size=large)")
        out[split] = rows
    return out


def _short(split: str) -> str:
    return {"validation": "val"}.get(split, split)


def check_fmt(task: str, fmt: str) -> str:
    """`fmt` if it is an instruction format, else ConfigError with did-you-mean."""
    if fmt not in INSTRUCT_FORMATS:
        raise ConfigError(f"lab task {task}: fmt: unknown format {fmt!r}{suggest(fmt, INSTRUCT_FORMATS)}; "
                          f"known: {', '.join(INSTRUCT_FORMATS)}")
    return fmt


def instruct_row(instruction: str, input: str, output: str, fmt: str) -> dict:
    """An alpaca row {instruction, input, output}, or the same as messages: one user turn (the
    instruction, a blank line, the input when there is one) and one assistant turn."""
    if fmt == "alpaca":
        return {"instruction": instruction, "input": input, "output": output}
    user = f"{instruction}\n\n{input}" if input else instruction
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": output}]}


def input_key(row: dict) -> Hashable:
    """What a model sees of an instruction row (alpaca or messages): the identity of its input."""
    if "messages" in row:
        return tuple(m["content"] for m in row["messages"] if m["role"] != "assistant")
    return (row["instruction"], row["input"])

