"""Multiple-choice evaluation by log-likelihood, MMLU style (Hendrycks et al. 2021, "Measuring
Massive Multitask Language Understanding"; prompt format of the original MMLU code and
lm-eval-harness).

Rows (jsonl): {"question": str, "choices": [str, ...], "answer": index or letter, "subject"?: str}.
The prompt holds k solved examples (from a dev file, else from the other rows; never the row
itself; same subject first), then the question, its lettered choices and "Answer:":

    The following are multiple choice questions (with answers) about high school physics.

    <shot question>
    A. ...
    B. ...
    Answer: B

    <question>
    A. ...
    B. ...
    Answer:

Each choice k is scored by log p(continuation_k | prompt) (see `tunewright.eval.scoring`), where
the continuation is " A", " B", ... (mode "letter") or " " + the choice text (mode "text"); the
prediction is the argmax. Mode "cloze" does not list the choices: the prompt is the question and
"Answer:", and each choice's text is scored after it, as lm-evaluation-harness's cloze tasks
(ARC, HellaSwag, MMLU "continuation") do; a small model that cannot map letters to answers is judged
on the answers themselves. With choice texts, longer choices collect more negative log-probability,
so `normalize` may divide the score by the choice's characters ("chars", lm-eval's acc_norm), its
UTF-8 bytes ("bytes", lm-eval's acc_bytes: fairer across scripts, where a character is 1-4 bytes) or
its tokens ("tokens"). Accuracy is reported overall and per subject.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from tunewright.errors import ConfigError, DataError
from tunewright.registry import suggest

__all__ = ["Question", "LETTERS", "MODES", "LISTED", "NORMALIZERS", "parse_question", "load_questions", "select_shots",
           "build_prompt", "evaluate_multiple_choice"]

LETTERS = string.ascii_uppercase


@dataclass
class Question:
    """One validated row; `answer` is the index of the right choice."""

    question: str
    choices: list[str]
    answer: int
    subject: str | None = None
    source: str = "<rows>"
    line: int = 0


# ------------------------------------------------------------------ rows

def parse_question(row, source: str = "<rows>", line: int = 0) -> Question:
    """Validate one row; bad fields raise DataError(source, line, field, reason)."""
    def bad(field: str | None, reason: str) -> DataError:
        return DataError(source, line, field, reason)

    if not isinstance(row, dict):
        raise bad(None, f"a row must be a JSON object, got {type(row).__name__}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise bad("question", "missing or not a non-empty string")
    choices = row.get("choices")
    if choices is None:
        raise bad("choices", "missing")
    if not isinstance(choices, list) or len(choices) < 2 or len(choices) > len(LETTERS):
        raise bad("choices", f"must be a list of 2 to {len(LETTERS)} strings, got {choices!r}")
    for k, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            raise bad("choices", f"choice {k} must be a non-empty string, got {choice!r}")
    subject = row.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise bad("subject", f"must be a string, got {subject!r}")
    return Question(question, list(choices), _answer_index(row.get("answer"), len(choices), bad),
                    subject or None, source, line)


def _answer_index(answer, n: int, bad: Callable[[str, str], DataError]) -> int:
    valid = f"0-{n - 1} or A-{LETTERS[n - 1]}"
    if answer is None:
        raise bad("answer", f"missing (an index {valid})")
    if isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    elif isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in LETTERS:
        index = LETTERS.index(answer.strip().upper())
    else:
        raise bad("answer", f"{answer!r} is neither an index nor a letter ({valid})")
    if not 0 <= index < n:
        raise bad("answer", f"{answer!r} is out of range for {n} choices ({valid})")
    return index


def load_questions(rows: str | Path | Sequence, source: str = "<rows>") -> list[Question]:
    """Questions from a jsonl path, or from a list of dicts (or Questions) named `source`.
    Blank lines are skipped; a malformed line raises DataError with its file and line."""
    if isinstance(rows, (str, Path)):
        path = Path(rows)
        if not path.is_file():
            raise DataError(str(path), None, None, "file not found")
        out = []
        for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(str(path), line, None, f"invalid JSON: {e.msg}") from None
            out.append(parse_question(row, str(path), line))
        if not out:
            raise DataError(str(path), None, None, "no questions in the file")
        return out
    out = [r if isinstance(r, Question) else parse_question(r, source, i) for i, r in enumerate(rows, start=1)]
    if not out:
        raise DataError(source, None, None, "no questions")
    return out


# ------------------------------------------------------------------ prompts

def _letter(q: Question, k: int) -> str:
    return " " + LETTERS[k]


def _text(q: Question, k: int) -> str:
    return " " + q.choices[k].strip()


# mode -> the continuation scored for choice k (also the answer written after a shot's "Answer:")
MODES: dict[str, Callable[[Question, int], str]] = {"letter": _letter, "text": _text, "cloze": _text}
LISTED = {"letter": True, "text": True, "cloze": False}  # whether the prompt lists the lettered choices

# normalize -> score from (summed log-likelihood, continuation tokens, the choice's text)
NORMALIZERS: dict[str | None, Callable[[float, int, str], float]] = {
    None: lambda ll, tokens, choice: ll,
    "tokens": lambda ll, tokens, choice: ll / tokens,
    "chars": lambda ll, tokens, choice: ll / len(choice),
    "bytes": lambda ll, tokens, choice: ll / len(choice.encode("utf-8")),
}


def select_shots(q: Question, pool: Sequence[Question], k: int) -> list[Question]:
    """The first k pool questions that are not `q` (same place, or same question and choices),
    those of q's subject first, then the others in pool order."""
    if k <= 0:
        return []
    others = [p for p in pool if not _same_row(p, q)]
    same = [p for p in others if q.subject is not None and p.subject == q.subject]
    rest = [p for p in others if not (q.subject is not None and p.subject == q.subject)]
    return (same + rest)[:k]


def _same_row(p: Question, q: Question) -> bool:
    """The same row (object or file position), or a copy of it: either would leak the answer."""
    same_place = p.line > 0 and (p.source, p.line) == (q.source, q.line)
    return p is q or same_place or (p.question, p.choices) == (q.question, q.choices)


def _block(q: Question, listed: bool = True) -> str:
    choices = [f"{LETTERS[k]}. {c.strip()}" for k, c in enumerate(q.choices)] if listed else []
    return "\n".join([q.question.strip(), *choices]) + "\nAnswer:"


def build_prompt(q: Question, shots: Sequence[Question], mode: str = "letter") -> str:
    """The MMLU prompt: subject header, solved shots, then q's question, choices (not in cloze
    mode) and "Answer:"."""
    header = ""
    if q.subject:
        header = f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n"
    listed = LISTED[mode]
    solved = "".join(_block(s, listed) + MODES[mode](s, s.answer) + "\n\n" for s in shots)
    return header + solved + _block(q, listed)


# ------------------------------------------------------------------ the harness

def evaluate_multiple_choice(model, tokenizer, rows, k_shot: int = 0, mode: str = "letter",
                             normalize: str | None = None, *, dev=None, template: str | None = None,
                             system_prompt: str | None = None, batch_size: int = 8,
                             max_length: int | None = None) -> dict:
    """Accuracy of the highest-scoring choice, overall and per subject.

    rows / dev: a jsonl path or a list of row dicts. Shots come from `dev` when given, else from
    `rows` (never the row itself). A prompt too long for the model (`max_length`, default its
    position limit) loses shots from the end, then is cut on the left; both are counted.
    Prompts are raw text unless `template` is given (then a user turn, as in generation).

    Returns {"accuracy", "n", "per_subject": {subject: {"accuracy", "n"}}, "k_shot", "mode",
    "normalize", "fewer_shots", "truncated", "per_example": [{"source", "line", "subject",
    "answer", "predicted", "scores", "shots"}]}; `scores` are the normalized log-likelihoods.
    """
    from tunewright.eval.generate import prompt_ids
    from tunewright.eval.scoring import continuation_log_likelihoods, position_limit

    if mode not in MODES:
        raise ConfigError(f"unknown multiple-choice mode {mode!r}{suggest(mode, MODES)}; known: {', '.join(MODES)}")
    if normalize not in NORMALIZERS:
        raise ConfigError(f"unknown normalize {normalize!r}{suggest(str(normalize), [n for n in NORMALIZERS if n])}; "
                          f"known: {', '.join(n for n in NORMALIZERS if n)} (or none)")
    if normalize is not None and mode == "letter":  # letters are equally long: normalizing would change nothing
        raise ConfigError(f"normalize={normalize!r} applies to modes 'text' and 'cloze', not {mode!r}")
    if k_shot < 0:
        raise ConfigError(f"k_shot must be 0 or more, got {k_shot}")
    questions = load_questions(rows)
    pool = load_questions(dev, "<dev>") if dev is not None else questions
    raw = not template or bool(getattr(model.config, "is_encoder_decoder", False))
    limit = position_limit(model) if max_length is None else max_length

    contexts, continuations, shots_used, fewer = [], [], [], 0
    for q in questions:
        texts = [MODES[mode](q, k) for k in range(len(q.choices))]
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        shots = select_shots(q, pool, k_shot)
        context = prompt_ids(build_prompt(q, shots, mode), tokenizer, template, raw, system_prompt)
        # the longest choice must fit after the prompt: drop shots (last first) until it does
        while limit is not None and shots and len(context) + max(map(len, ids)) - 1 > limit:
            shots = shots[:-1]
            context = prompt_ids(build_prompt(q, shots, mode), tokenizer, template, raw, system_prompt)
        fewer += len(shots) < k_shot  # too few other rows, or too long a prompt
        contexts.append(context)
        continuations.append(ids)
        shots_used.append(len(shots))
    scored = continuation_log_likelihoods(model, contexts, continuations, batch_size=batch_size, max_length=limit)

    per_example, by_subject = [], {}
    for q, ll, tokens, n_shots in zip(questions, scored.log_likelihood, scored.tokens, shots_used):
        scores = [NORMALIZERS[normalize](float(ll[k]), tokens[k], q.choices[k].strip())
                  for k in range(len(q.choices))]
        predicted = int(torch.tensor(scores, dtype=torch.float64).argmax())  # ties: the first choice
        per_example.append({"source": q.source, "line": q.line, "subject": q.subject, "answer": q.answer,
                            "predicted": predicted, "scores": scores, "shots": n_shots})
        if q.subject is not None:
            by_subject.setdefault(q.subject, []).append(predicted == q.answer)
    correct = [e["predicted"] == e["answer"] for e in per_example]
    return {"accuracy": sum(correct) / len(correct), "n": len(correct),
            "per_subject": {s: {"accuracy": sum(v) / len(v), "n": len(v)} for s, v in sorted(by_subject.items())},
            "k_shot": k_shot, "mode": mode, "normalize": normalize, "fewer_shots": fewer,
            "truncated": scored.truncated, "per_example": per_example}
