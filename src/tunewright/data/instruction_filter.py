"""The self-instruct filters (Wang et al. 2023, "Self-Instruct: Aligning Language Models with
Self-Generated Instructions"): which machine-written instructions join the pool.

A candidate is checked in this order and dropped for the first reason that applies:

    empty        no instruction text (or none could be parsed from the generation)
    too_short    3 words or fewer
    too_long     more than 150 words
    unsuitable   names something a text model cannot see or make (image, picture, graph, file,
                 map, draw, plot, go to, video, audio, music, flowchart, diagram): the paper's list
    duplicate    the same text (case and spacing aside) as an instruction in the pool
    similar      ROUGE-L F1 >= 0.7 against any instruction in the pool
    no_output    the instruction passes but the generated task has no output to learn from

The pool is the seed instructions plus every candidate kept so far, so a candidate is compared
with the kept candidates before it, never with dropped ones. ROUGE-L is rouge-score's (its
default tokenizer: lowercase, alphanumeric tokens; no stemming), F1 = 2PR / (P + R).

The threshold: the paper keeps an instruction "only when its ROUGE-L similarity with any existing
instruction is less than 0.7", so a score of exactly 0.7 is dropped here. The paper's code keeps
it (`if max(rouge_scores) > 0.7: continue`); we follow the text. F1 of token counts that give 0.7
exactly is 0.7 or 0.7000000000000001 in floating point depending on the lengths, so scores within
1e-9 below the threshold count as reaching it: the rule does not depend on rounding.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["REASONS", "UNSUITABLE", "Candidate", "Verdict", "InstructionPool", "filter_candidates"]

REASONS = ("empty", "too_short", "too_long", "unsuitable", "duplicate", "similar", "no_output")
UNSUITABLE = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
              "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_UNSUITABLE = re.compile(r"\b(" + "|".join(map(re.escape, UNSUITABLE)) + r")\b", re.IGNORECASE)
_TOLERANCE = 1e-9  # float rounding of F1 (see the module docstring)


@dataclass
class Candidate:
    """A machine-written task, as parsed from one generation."""

    instruction: str
    input: str = ""
    output: str = ""
    meta: dict = field(default_factory=dict)  # where it came from (round, prompt tasks), kept as provenance


@dataclass
class Verdict:
    """Why a candidate was dropped (`reason` None: kept) and its nearest pool instruction."""

    reason: str | None
    rouge_l: float = 0.0  # the highest ROUGE-L F1 against the pool (0 when not compared)
    nearest: str | None = None


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


class InstructionPool:
    """Instructions that new candidates must differ from; each is tokenized once, as rouge-score
    would tokenize it, so a candidate costs one LCS per pool member and no re-tokenizing."""

    def __init__(self, instructions: list[str], threshold: float = 0.7):
        from rouge_score import tokenizers

        self.threshold = threshold
        self._tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
        self.instructions: list[str] = []
        self._tokens: list[list[str]] = []
        self._normal: set[str] = set()
        for text in instructions:
            self.add(text)

    def add(self, instruction: str) -> None:
        self.instructions.append(instruction)
        self._tokens.append(self._tokenizer.tokenize(instruction))
        self._normal.add(_normal(instruction))

    def nearest(self, instruction: str) -> tuple[float, str | None]:
        """(highest ROUGE-L F1 against the pool, that instruction); stops at the first reaching the threshold."""
        from rouge_score.rouge_scorer import _score_lcs  # the LCS score RougeScorer("rougeL") computes

        tokens = self._tokenizer.tokenize(instruction)
        best, which = 0.0, None
        for text, pooled in zip(self.instructions, self._tokens):
            f1 = _score_lcs(pooled, tokens).fmeasure
            if f1 > best:
                best, which = f1, text
                if best >= self.threshold - _TOLERANCE:
                    break
        return best, which

    def check(self, candidate: Candidate) -> Verdict:
        """The verdict on `candidate` (the pool is not changed: `add` a kept one)."""
        text = candidate.instruction.strip()
        words = len(text.split())
        if not text:
            return Verdict("empty")
        if words <= 3:
            return Verdict("too_short")
        if words > 150:
            return Verdict("too_long")
        if _UNSUITABLE.search(text):
            return Verdict("unsuitable")
        if _normal(text) in self._normal:
            return Verdict("duplicate", 1.0, next(i for i in self.instructions if _normal(i) == _normal(text)))
        score, nearest = self.nearest(text)
        if score >= self.threshold - _TOLERANCE:
            return Verdict("similar", score, nearest)
        if not candidate.output.strip():
            return Verdict("no_output", score, nearest)
        return Verdict(None, score, nearest)


def filter_candidates(pool: InstructionPool, candidates: list[Candidate]
                      ) -> tuple[list[tuple[Candidate, Verdict]], list[tuple[Candidate, Verdict]], Counter]:
    """Check `candidates` in order against `pool`, adding each kept one to it.
    Returns (kept, dropped, counts per reason)."""
    kept, dropped, counts = [], [], Counter({reason: 0 for reason in REASONS})
    for candidate in candidates:
        verdict = pool.check(candidate)
        if verdict.reason is None:
            pool.add(candidate.instruction.strip())
            kept.append((candidate, verdict))
        else:
            counts[verdict.reason] += 1
            dropped.append((candidate, verdict))
    return kept, dropped, counts
