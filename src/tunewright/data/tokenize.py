"""Tokenization with label masking: segments -> token ids and labels, with every dropped row counted.

Each segment is tokenized on its own (`add_special_tokens=False`) and the pieces concatenated, so
the tokens of a generation prompt are exactly a prefix of the training tokens (tokenizing the
joined text could merge tokens across the prompt/reply boundary). Labels copy the ids of trained
segments and hold IGNORE_INDEX (-100) elsewhere; they are not shifted (the loss shifts).

    ids    = [BOS] + tok(seg_1) + tok(seg_2) + ... [+ EOS]
    labels = [-100] + (ids or -100 per segment) ...  [+ EOS if the last segment trains]

Special-token text inside messages ("</s>" in a code sample) is encoded as plain text through
transformers' control-token marking, so only the template writes control tokens; such rows are
counted. Raw segments (pre-templated text) are taken literally.
"""

from __future__ import annotations

import re
import statistics
import weakref
from dataclasses import asdict, dataclass, field
from typing import Iterable

from tunewright.data.templates import conversation_dicts, end_of_turn_ids, render
from tunewright.data.types import IGNORE_INDEX, Encoded, Example, Segment
from tunewright.errors import DataError

__all__ = ["encode", "encode_prompt", "tokenize_examples", "TokenStats", "DROP_REASONS"]

DROP_REASONS = {
    "too_long": "longer than data.cutoff_len with data.truncation: drop",
    "response_truncated": "every trained token lay past data.cutoff_len",
    "no_target": "no token carries loss (no assistant reply trained)",
    # preference formats (objectives/pairs.py)
    "identical_pair": "the chosen and the rejected answer are the same text",
    "short_response": "an answer has fewer words than data.min_response_words",
    "completion_cut": "the prompt fills data.cutoff_len: no answer token is left",
}


@dataclass
class TokenStats:
    """Counts of one tokenization pass; `lines()` is what the run prints."""

    rows_in: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    total_tokens: int = 0
    target_tokens: int = 0
    lengths: list[int] = field(default_factory=list)  # kept rows' token counts, for a histogram
    control_text: int = 0  # kept rows whose messages held special-token text, encoded as plain text
    cutoff_len: int | None = None
    from_cache: bool = False

    @property
    def target_fraction(self) -> float:
        return self.target_tokens / self.total_tokens if self.total_tokens else 0.0

    def add(self, result: Encoded | str) -> None:
        self.rows_in += 1
        if isinstance(result, str):
            self.dropped[result] = self.dropped.get(result, 0) + 1
            return
        self.kept += 1
        self.truncated += bool(result.meta.get("truncated"))
        self.control_text += bool(result.meta.get("control_text"))
        # encoder-decoder rows hold their target apart from the input (meta["decoder_tokens"])
        self.total_tokens += len(result.input_ids) + result.meta.get("decoder_tokens", 0)
        self.target_tokens += sum(label != IGNORE_INDEX for label in result.labels)
        # a preference pair holds its rejected answer apart from the prompt + chosen sequence
        self.total_tokens += len(result.meta.get("rejected", ()))
        self.target_tokens += sum(label != IGNORE_INDEX for label in result.meta.get("rejected_labels", ()))
        self.lengths.append(len(result.input_ids))

    def histogram(self, bins: int = 8) -> list[tuple[int, int, int]]:
        """(low, high, count) over kept lengths, `bins` equal-width buckets, low inclusive."""
        if not self.lengths:
            return []
        lo, hi = min(self.lengths), max(self.lengths)
        width = max(1, -(-(hi - lo + 1) // bins))
        counts = [0] * bins
        for n in self.lengths:
            counts[min((n - lo) // width, bins - 1)] += 1
        return [(lo + b * width, lo + (b + 1) * width - 1, c) for b, c in enumerate(counts) if c]

    def lines(self) -> list[str]:
        drops = ", ".join(f"{k} {v:,}" for k, v in sorted(self.dropped.items())) or "none"
        cut = f" to {self.cutoff_len:,} tokens" if self.cutoff_len else ""
        out = [f"tokenized {self.rows_in:,} rows{' (from cache)' if self.from_cache else ''}: {self.kept:,} kept, "
               f"{self.truncated:,} truncated{cut}, {sum(self.dropped.values()):,} dropped ({drops})",
               f"tokens: {self.total_tokens:,} total, {self.target_tokens:,} trained ({self.target_fraction:.1%})"]
        if self.control_text:
            out.append(f"{self.control_text:,} rows had special-token text in their messages (e.g. '</s>'), "
                       f"encoded as plain text")
        if self.lengths:
            q = sorted(self.lengths)
            out.append(f"length: min {q[0]:,}, median {statistics.median(q):,.0f}, "
                       f"p95 {q[min(len(q) - 1, int(0.95 * len(q)))]:,}, max {q[-1]:,}")
            peak = max(c for _, _, c in self.histogram())
            out += [f"  {lo:>6,}-{hi:<6,} {'#' * max(1, round(30 * c / peak))} {c:,}" for lo, hi, c in self.histogram()]
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("from_cache")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TokenStats":
        return cls(**d)


# ------------------------------------------------------------------ facts about a tokenizer

@dataclass(frozen=True)
class _Facts:
    bos_id: int | None  # set when the tokenizer normally prepends BOS
    eos_id: int | None
    end_ids: frozenset[int]  # end-of-turn ids and EOS
    blank_ids: frozenset[int]  # ids that decode to whitespace only (a newline after <|im_end|>)
    control: re.Pattern | None  # added-token text, found in message content to encode it as text
    can_sanitize: bool  # the tokenizer encodes marked control-token text as plain text


_FACTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _facts(tokenizer, template: str) -> _Facts:
    key = (template, len(tokenizer), str(tokenizer.eos_token), str(tokenizer.bos_token))
    known = _FACTS.setdefault(tokenizer, {})
    if key not in known:
        probe = "a"
        with_special = tokenizer(probe, add_special_tokens=True).input_ids
        plain = tokenizer(probe, add_special_tokens=False).input_ids
        bos = tokenizer.bos_token_id
        adds_bos = bos is not None and with_special[:1] == [bos] and plain[:1] != [bos]
        blanks = frozenset(i for text in ("\n", "\n\n", "\r\n", " ", "\t")
                           for i in tokenizer(text, add_special_tokens=False).input_ids)
        # Control tokens as transformers counts them: special added tokens and those the template writes.
        control = [t.content for t in tokenizer.added_tokens_decoder.values()
                   if (t.special or t.content in template) and t.content.strip()]
        pattern = re.compile("|".join(map(re.escape, sorted(control, key=len, reverse=True)))) if control else None
        known[key] = _Facts(bos if adds_bos else None, tokenizer.eos_token_id,
                            frozenset(end_of_turn_ids(tokenizer, template)), blanks, pattern,
                            pattern is not None and _sanitizes(tokenizer, control[0], pattern))
    return known[key]


def _sanitizes(tokenizer, token: str, pattern: re.Pattern) -> bool:
    """Whether this tokenizer supports transformers' marked control-token text (fast backend, 5.x)."""
    from transformers.utils.chat_template_utils import mark_control_tokens

    try:
        ids = tokenizer(mark_control_tokens(token, pattern), add_special_tokens=False,
                        sanitize_control_tokens=True).input_ids
    except Exception:  # an older or slow backend: control-token text stays as is, but is counted
        return False
    return tokenizer.convert_tokens_to_ids(token) not in ids and tokenizer.decode(ids) == token


def _ends_turn(ids: list[int], facts: _Facts) -> bool:
    """True when the last non-whitespace token ends a turn (EOS or the template's marker)."""
    k = len(ids)
    while k and ids[k - 1] in facts.blank_ids:
        k -= 1
    return bool(k) and ids[k - 1] in facts.end_ids


def _tokenize_segments(segments: list[Segment], tokenizer, facts: _Facts, train_all: bool, marked: bool = False
                       ) -> tuple[list[int], list[int]]:
    """Segments -> (ids, labels), both [seq]; BOS prepended when the tokenizer adds one and the text lacks it.

    `marked`: the text holds control-token text marked by `_render`, to be encoded as plain text.
    """
    ids: list[int] = []
    labels: list[int] = []
    sanitize = {"sanitize_control_tokens": True} if marked else {}
    for seg in segments:
        piece = tokenizer(seg.text, add_special_tokens=False, **sanitize).input_ids
        ids += piece
        labels += piece if (seg.train or train_all) else [IGNORE_INDEX] * len(piece)
    # A template that writes its own begin marker (llama3's <|begin_of_text|>) already starts the
    # text; a second BOS in front of it would be a sequence start the model never saw.
    starts_itself = bool(ids) and ids[0] in tokenizer.added_tokens_decoder and \
        tokenizer.convert_ids_to_tokens(ids[0]) in _BEGIN_MARKERS
    if facts.bos_id is not None and ids[:1] != [facts.bos_id] and not starts_itself:
        ids.insert(0, facts.bos_id)
        labels.insert(0, facts.bos_id if train_all else IGNORE_INDEX)
    return ids, labels


_BEGIN_MARKERS = {"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"}


# ------------------------------------------------------------------ one example

def _render(messages, tokenizer, template: str, facts: _Facts, **options) -> tuple[list[Segment], bool]:
    """render(), except that special-token text inside messages ("</s>" in a code sample, a pasted
    "<|im_end|>") is marked so it encodes as plain text, not as a control token the template did not
    write. Returns (segments, whether any message held such text)."""
    dicts, flags = conversation_dicts(messages, options.pop("system_prompt", None), template)
    found = facts.control is not None and any(
        isinstance(value, str) and facts.control.search(value) for d in dicts for key, value in d.items()
        if key != "role")
    if found and facts.can_sanitize:
        from transformers.utils.chat_template_utils import mark_control_tokens

        dicts = mark_control_tokens(dicts, facts.control)
    segments = render([{**d, "train": f} for d, f in zip(dicts, flags)], tokenizer, template, **options)
    return segments, bool(found)


def _segments_of(example: Example, tokenizer, template: str, cfg, facts: _Facts) -> tuple[list[Segment], bool]:
    """The example's segments, and whether control-token text in its messages was marked.

    Raw segments are taken literally, special-token text included (pre-templated text means it).
    """
    if example.segments is not None:
        return [s for s in example.segments if s.text], False
    if example.messages is None:
        raise DataError(example.source, example.line, None, "the example has neither messages nor segments")
    try:
        return _render(example.messages, tokenizer, template, facts, train_on_turns=cfg.train_on_turns,
                       train_on_inputs=cfg.train_on_inputs, system_prompt=cfg.system_prompt)
    except DataError as e:  # the template rejected it: report where the row came from
        raise DataError(example.source, example.line, e.field, e.reason) from None


def encode(example: Example, tokenizer, template: str, cfg) -> Encoded | str:
    """One example -> Encoded (ids and labels, each [seq]), or a drop reason from DROP_REASONS.

    `cfg` is a DataConfig (cutoff_len, truncation, train_on_inputs, train_on_turns, add_eos_token,
    system_prompt). EOS is appended when `add_eos_token` and the text does not already end with an
    end-of-turn or EOS token; it is trained when the last segment is.
    """
    facts = _facts(tokenizer, template)
    segments, control_text = _segments_of(example, tokenizer, template, cfg, facts)
    ids, labels = _tokenize_segments(segments, tokenizer, facts, cfg.train_on_inputs,
                                     marked=control_text and facts.can_sanitize)
    if cfg.add_eos_token and facts.eos_id is not None and not _ends_turn(ids, facts):
        trained = cfg.train_on_inputs or (bool(segments) and segments[-1].train)
        ids.append(facts.eos_id)
        labels.append(facts.eos_id if trained else IGNORE_INDEX)
    if all(label == IGNORE_INDEX for label in labels):
        return "no_target"
    meta = {"control_text": True} if control_text else {}
    if len(ids) > cfg.cutoff_len:
        if cfg.truncation == "drop":
            return "too_long"
        ids, labels = ids[:cfg.cutoff_len], labels[:cfg.cutoff_len]
        if all(label == IGNORE_INDEX for label in labels):
            return "response_truncated"
        meta["truncated"] = True
    return Encoded(ids, labels, example.source, example.line, meta)


def encode_prompt(messages, tokenizer, template: str, system_prompt: str | None = None) -> list[int]:
    """Generation-time prompt tokens [seq]: the conversation plus the assistant header, built by the
    same code path as training, so they equal the first tokens of the trained example."""
    facts = _facts(tokenizer, template)
    segments, control_text = _render(messages, tokenizer, template, facts, system_prompt=system_prompt,
                                     add_generation_prompt=True)
    ids, _ = _tokenize_segments(segments, tokenizer, facts, False, marked=control_text and facts.can_sanitize)
    return ids


# ------------------------------------------------------------------ a data set

def tokenize_examples(examples: Iterable[Example], tokenizer, template: str, cfg, encode_one=None
                      ) -> tuple[list[Encoded], TokenStats]:
    """Encode every example with `encode_one(example, tokenizer, template, cfg)` (an objective's
    `encode`; default this module's causal-LM `encode`); count kept, truncated and dropped rows (by
    reason) and tokens.

    Raises DataError when no row is left, naming the sources and the drop counts.
    """
    encode_one = encode_one or encode
    stats = TokenStats(cutoff_len=cfg.cutoff_len)
    kept: list[Encoded] = []
    sources: dict[str, None] = {}
    for example in examples:
        sources[example.source] = None
        result = encode_one(example, tokenizer, template, cfg)
        stats.add(result)
        if not isinstance(result, str):
            result.meta.update(example.meta)  # the phrasing drawn for the row, for the validation report
            kept.append(result)
    if not kept:
        drops = ", ".join(f"{k} {v} ({DROP_REASONS.get(k, k)})" for k, v in sorted(stats.dropped.items()))
        raise DataError(", ".join(sources) or "<data>", None, None,
                        f"no trainable tokens left: {stats.rows_in} rows in, all dropped"
                        f"{': ' + drops if drops else ''}")
    return kept, stats
