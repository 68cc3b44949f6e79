"""Few-shot prompts for `tunewright eval`: the in-context-learning baseline of the course's FLAN-T5
lab (zero-, one- and few-shot inference before any tuning) and of FLAN's few-shot evaluation.

    data: {path: test.jsonl, shots: 2, shots_from: train.jsonl}

Each evaluation row gets k examples (prompt and reference) drawn from `shots_from` with its own
seeded stream (generation.seed and the row's line, so every candidate sees the same examples),
never a row with the same prompt and reference as itself. A templated model sees them as earlier
user/assistant turns; a plain-text prompt (a seq2seq model, raw prompt/completion rows) as
"prompt reply" blocks, each followed by a blank line, then the row's prompt.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: compare.py imports this module
    from tunewright.eval.compare import EvalRow

__all__ = ["with_shots"]


def _turns(example: EvalRow) -> list[dict]:
    """An example as turns: its prompt turns (a system turn left out: the row's own stays first) and its reply."""
    return [m for m in example.messages or [] if m["role"] != "system"] + \
        [{"role": "assistant", "content": example.reference}]


def _gap(prompt: str) -> str:
    """A newline between an example's prompt and its reply, unless the prompt ends in one ("Summary: ")."""
    return "" if prompt[-1:].isspace() else "\n"


def with_shots(rows: list[EvalRow], pool: list[EvalRow], k: int, seed: int) -> list[EvalRow]:
    """`rows` with k examples of `pool` in front of each prompt (fewer when the pool is short)."""
    out = []
    for row in rows:
        rng = random.Random(f"tunewright-eval-shots-{seed}-{row.line}")
        others = [ex for ex in pool if (ex.prompt, ex.reference) != (row.prompt, row.reference)]
        picked = rng.sample(others, min(k, len(others)))
        prompt = "".join(f"{ex.prompt}{_gap(ex.prompt)}{ex.reference}\n\n" for ex in picked) + row.prompt
        messages = None
        if row.messages is not None:
            head = 1 if row.messages and row.messages[0]["role"] == "system" else 0
            messages = row.messages[:head] + [t for ex in picked for t in _turns(ex)] + row.messages[head:]
        out.append(replace(row, prompt=prompt, messages=messages))
    return out
