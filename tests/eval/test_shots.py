"""Few-shot prompts in eval configs (the in-context-learning baseline): k examples from a named
file before each prompt, the same for every candidate, never the row itself."""

from __future__ import annotations

import json

from tunewright.eval.compare import EvalRow, load_rows
from tunewright.eval.config import EvalData
from tunewright.eval.shots import with_shots


def _row(i: int, system: bool = False) -> EvalRow:
    turns = [{"role": "system", "content": "Be brief."}] if system else []
    return EvalRow(i, f"q{i}", turns + [{"role": "user", "content": f"q{i}"}], f"a{i}")


def test_examples_come_before_the_prompt_as_turns_after_the_system_turn():
    pool = [_row(i) for i in range(10)]
    (row,) = with_shots([_row(3, system=True)], pool, k=2, seed=0)
    roles = [m["role"] for m in row.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    shown = [m["content"] for m in row.messages[1:-1]]
    assert "q3" not in shown and "a3" not in shown  # never the row itself
    assert all(f"a{q[1:]}" == a for q, a in zip(shown[::2], shown[1::2]))  # each example with its own reply
    assert row.messages[-1] == {"role": "user", "content": "q3"} and row.reference == "a3"
    # every candidate sees the same examples (the seed and the row decide), another seed others
    assert with_shots([_row(3, system=True)], pool, 2, 0) == [row]
    assert [with_shots([_row(3)], pool, 2, s)[0].messages for s in range(5)].count(row.messages[1:]) < 5


def test_plain_text_prompts_get_prompt_and_reply_blocks():
    pool = [EvalRow(i, f"Dialogue {i}\nSummary: ", None, f"sum {i}") for i in range(3)]
    (row,) = with_shots([EvalRow(9, "Q: x", None, "y")], pool[:1], k=1, seed=0)
    assert row.prompt == "Dialogue 0\nSummary: sum 0\n\nQ: x" and row.messages is None
    (row,) = with_shots([EvalRow(9, "Q: x", None, "y")], [EvalRow(1, "Q: w", None, "v")], k=3, seed=0)
    assert row.prompt == "Q: w\nv\n\nQ: x"  # a short pool gives what it has


def test_load_rows_draws_examples_from_shots_from(tmp_path):
    rows = [{"instruction": f"Add {i} and 1.", "output": str(i + 1)} for i in range(6)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got, counts = load_rows(EvalData(path=str(path), shots=3, shots_from=str(path), limit=2), seed=0)
    assert counts.used == 2 and [r.reference for r in got] == ["1", "2"]
    for r in got:
        users = [m["content"] for m in r.messages if m["role"] == "user"]
        assert len(users) == 4 and users[-1] not in users[:-1]
