"""`tunewright data self-instruct`: grow an instruction dataset from a few seed tasks with the model
itself (Wang et al. 2023, "Self-Instruct"), as Alpaca did with text-davinci-003.

    seed tasks (alpaca jsonl) -> prompts of k tasks from the pool -> the model writes task k+1
    -> filters (data/instruction_filter.py: length, unsuitable words, duplicates, ROUGE-L < 0.7
       against every instruction in the pool, seed and kept) -> kept tasks join the pool
    -> out.jsonl: alpaca rows {instruction, input, output, provenance}; out.dropped.jsonl: the
       rejected candidates with their reason; the counts per reason are printed

A prompt shows `shots` tasks: up to two machine-written ones already kept (the paper shows 2 of 8)
and seed tasks for the rest, drawn per prompt from a stream seeded by `seed`, round and slot. The
model continues the numbered list in plain text (a completion, no chat template, as the paper's
GPT-3 did) and generation stops where it starts the next task. Sampling is seeded, so a run with
the same model, seeds and settings writes the same file.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunewright.data.instruction_filter import REASONS, Candidate, InstructionPool, filter_candidates
from tunewright.errors import ConfigError, DataError

__all__ = ["SelfInstructResult", "read_seed_tasks", "build_prompt", "parse_task", "self_instruct",
           "model_proposer", "write_results"]

_HEADER = ("Come up with a series of new tasks. Each task has an instruction, an optional input and the output "
           "a good assistant would write. The tasks should be diverse.\n\n")
_NEXT_TASK = "\nTask "  # generation stops where the model starts another task


@dataclass
class SelfInstructResult:
    kept: list[dict]  # alpaca rows with provenance
    dropped: list[dict]  # candidates with their reason
    counts: Counter  # reason -> dropped candidates
    proposed: int
    seed_tasks: int

    def summary(self) -> str:
        reasons = ", ".join(f"{r} {self.counts[r]}" for r in REASONS)
        return (f"self-instruct: {self.proposed} proposed, {len(self.kept)} kept, {len(self.dropped)} dropped "
                f"({reasons}); pool: {self.seed_tasks} seed + {len(self.kept)} new instructions")


def read_seed_tasks(path: str | Path) -> list[dict]:
    """Seed tasks from an alpaca jsonl file (instruction, optional input, output), through the
    project's reader and format so a bad row is named by `file:line: field: reason`."""
    from tunewright.config import DataConfig, DataSource
    from tunewright.data.mixture import load_examples

    src = DataSource(path=str(path), format="alpaca")
    examples, _ = load_examples(src, DataConfig(datasets=[src]))
    tasks = []
    for ex in examples:
        user = ex.messages[-2]
        tasks.append({"instruction": user.content, "input": user.context or "", "output": ex.messages[-1].content})
    if len(tasks) < 2:
        raise DataError(str(path), None, None, f"{len(tasks)} seed task(s); self-instruct needs at least 2")
    return tasks


def _task_text(number: int, task: dict) -> str:
    return (f"Task {number}\nInstruction: {task['instruction']}\nInput: {task.get('input') or '<noinput>'}\n"
            f"Output: {task['output']}\n\n")


def build_prompt(shown: list[dict]) -> str:
    """The few-shot prompt: the tasks numbered 1..k, then the start of task k+1."""
    return _HEADER + "".join(_task_text(i + 1, t) for i, t in enumerate(shown)) + \
        f"Task {len(shown) + 1}\nInstruction:"


_FIELD = re.compile(r"^(Input|Output):[ \t]?", re.M)


def parse_task(text: str) -> Candidate:
    """The model's continuation after "Instruction:" -> a candidate (fields it did not write are '')."""
    text = text.split(_NEXT_TASK)[0]
    parts = _FIELD.split(text)
    fields = {"instruction": parts[0]}
    for name, value in zip(parts[1::2], parts[2::2]):
        fields.setdefault(name.lower(), value)
    value = {k: v.strip() for k, v in fields.items()}
    if value.get("input") in ("<noinput>", "<no input>", "None", "none"):
        value["input"] = ""
    return Candidate(value["instruction"], value.get("input", ""), value.get("output", ""))


def _pick(seeds: list[dict], new: list[dict], shots: int, rng: random.Random) -> tuple[list[dict], list[str]]:
    """`shots` tasks for one prompt: up to 2 machine-written, the rest seeds; (tasks, their labels)."""
    machine = rng.sample(range(len(new)), min(2, len(new), max(0, shots - 1)))
    human = rng.sample(range(len(seeds)), min(len(seeds), shots - len(machine)))
    chosen = [(seeds[i], f"seed:{i + 1}") for i in human] + [(new[i], f"generated:{i + 1}") for i in machine]
    rng.shuffle(chosen)
    return [t for t, _ in chosen], [label for _, label in chosen]


def self_instruct(seed_tasks: list[dict], propose: Callable[[list[str], int], list[str]], proposals: int,
                  shots: int = 4, batch_size: int = 8, seed: int = 0, threshold: float = 0.7,
                  model_name: str = "", echo=print) -> SelfInstructResult:
    """Run rounds of `batch_size` prompts until `proposals` candidates were written.

    `propose(prompts, round) -> completions` is the generator (the model, or a fixed list in tests);
    each completion is the text after the prompt's "Instruction:".
    """
    pool = InstructionPool([t["instruction"] for t in seed_tasks], threshold)
    kept: list[dict] = []
    dropped: list[dict] = []
    counts: Counter = Counter({r: 0 for r in REASONS})
    done = 0
    for round_ in range(-(-proposals // batch_size)):
        n = min(batch_size, proposals - done)
        shown = [_pick(seed_tasks, kept, shots, random.Random(f"tunewright-self-instruct-{seed}-{round_}-{i}"))
                 for i in range(n)]
        completions = propose([build_prompt(tasks) for tasks, _ in shown], round_)
        candidates = []
        for completion, (_, labels) in zip(completions, shown):
            candidate = parse_task(completion)
            candidate.meta = {"round": round_, "prompt_tasks": labels}
            candidates.append(candidate)
        good, bad, reasons = filter_candidates(pool, candidates)
        counts.update(reasons)
        for c, v in good:
            kept.append({"instruction": c.instruction, "input": c.input, "output": c.output,
                         "provenance": {"generator": "self-instruct", "model": model_name, "seed": seed, **c.meta,
                                        "nearest": v.nearest, "rouge_l": round(v.rouge_l, 4)}})
        dropped += [{"instruction": c.instruction, "input": c.input, "output": c.output, "reason": v.reason,
                     "nearest": v.nearest, "rouge_l": round(v.rouge_l, 4), **c.meta} for c, v in bad]
        done += n
        echo(f"round {round_ + 1}: {done} proposed, {len(kept)} kept")
    return SelfInstructResult(kept, dropped, counts, done, len(seed_tasks))


def model_proposer(model_name: str, max_new_tokens: int = 128, temperature: float = 0.7, top_p: float = 0.9,
                   seed: int = 0, batch_size: int = 8) -> Callable[[list[str], int], list[str]]:
    """The model as a generator: plain-text completion, sampled, seeded per round."""
    from tunewright.eval.generate import generate
    from tunewright.models.load import ModelConfig, load_model, load_tokenizer

    cfg = ModelConfig(name=model_name)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg).eval()

    def propose(prompts: list[str], round_: int) -> list[str]:
        return generate(model, tokenizer, prompts, raw=True, max_new_tokens=max_new_tokens, do_sample=True,
                        temperature=temperature, top_p=top_p, stop=[_NEXT_TASK], batch_size=batch_size,
                        seed=seed * 100_003 + round_)
    return propose


def write_results(result: SelfInstructResult, out: Path, overwrite: bool = False) -> tuple[Path, Path]:
    """out (kept rows, alpaca + provenance) and out.dropped.jsonl beside it; refuses to replace files."""
    out = Path(out)
    rejected = out.with_name(f"{out.stem}.dropped.jsonl")
    for path in (out, rejected):
        if path.exists() and not overwrite:
            raise ConfigError(f"{path}: exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, rows in ((out, result.kept), (rejected, result.dropped)):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return out, rejected
