"""From `data:` config to the training and evaluation examples: read + format each source under
the bad-row policy, hold out a validation split, then mix the training sources by weight.

Order of operations (each step counted in `SplitReport`):

    per training source   read -> format (bad rows raise, or are skipped and counted)
                          -> keep the first `training_size` examples (training_sample: first)
    union of sources      hold out `val_set_size` examples (seeded), before any repetition,
                          so an eval row can never reach training through a weight > 1
    per training source   training_sample: random keeps a seeded `training_size` of the rest
                          -> phrasings and few-shot examples (data/phrasings.py), the examples
                          drawn from the source's training rows only
                          -> weight w: floor(w) copies of the rows, plus a seeded sample of
                          round(frac(w) * n) of them, in file order
    evaluation            `eval_datasets` when given (phrased from their own rows), else the
                          held-out rows (phrased from their source's training rows)

Training examples come out grouped by source (copies, then the sample); the data loader shuffles.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunewright.data.formats import FORMATS
from tunewright.data.phrasings import PhrasingCounts, phrase_rows
from tunewright.data.sources import read_rows
from tunewright.data.types import Example
from tunewright.errors import ConfigError, DataError

if TYPE_CHECKING:  # annotations only: the schema imports this package
    from tunewright.schema import DataConfig, DataSource

__all__ = ["SkipReport", "SourceCounts", "SplitReport", "load_examples", "build_splits"]

_SHOWN = 3  # locations listed per skip reason


@dataclass
class SkipReport:
    """Bad rows of one source under `on_error: skip`: how many, why, and where the first were."""

    source: str
    rows: int = 0  # rows seen: loaded + skipped
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    where: dict[str, list[str]] = field(default_factory=dict)  # reason -> first `file:line`s

    def add(self, err: DataError) -> None:
        key = _reason_key(err)
        self.skipped += 1
        self.reasons[key] = self.reasons.get(key, 0) + 1
        shown = self.where.setdefault(key, [])
        if len(shown) < _SHOWN:
            shown.append(f"{err.file}:{err.line}" if err.line is not None else str(err.file))

    def summary(self) -> str:
        return "; ".join(f"{n} x {key} (at {', '.join(self.where[key])}"
                         f"{', ...' if n > len(self.where[key]) else ''})" for key, n in self.reasons.items())

    def lines(self) -> list[str]:
        if not self.skipped:
            return []
        head = f"{self.source}: skipped {self.skipped} of {self.rows} rows (data.on_error: skip)"
        return [head] + [f"  {n} x {key}  at {', '.join(self.where[key])}{', ...' if n > len(self.where[key]) else ''}"
                         for key, n in self.reasons.items()]


def _reason_key(err: DataError) -> str:
    """Group errors that differ only in the turn index or a column number: `messages[*].role: missing`."""
    fld = re.sub(r"\[\d+\]", "[*]", err.field) if err.field else ""
    reason = re.split(r" \(|; ", err.reason, maxsplit=1)[0]
    return f"{fld}: {reason}" if fld else reason


def _line_of(err: DataError) -> float:
    return err.line if err.line is not None else math.inf


def load_examples(src: DataSource, cfg: DataConfig) -> tuple[list[Example], SkipReport]:
    """Read and format one source, honouring `cfg.on_error`.

    `raise`: the first bad row in file order raises its DataError. `skip`: bad rows are left out
    (the rest come back in file order) and counted; more than `cfg.max_skipped` (a count if >= 1,
    else a fraction of the rows seen) raises a DataError summarising them.
    """
    fmt = FORMATS.get(src.format)  # an unknown format fails before the file is read
    read_errors: list[DataError] = []
    rows = read_rows(src, read_errors)
    report = SkipReport(src.path, rows=len(rows) + len(read_errors))
    # Under `raise`, a format error before the first unreadable line is the first error.
    stop = _line_of(read_errors[0]) if read_errors and cfg.on_error == "raise" else math.inf
    examples: list[Example] = []
    bad: list[DataError] = list(read_errors)
    for line, row in rows:
        if line > stop:
            break
        try:
            made = fmt(row, line, src)  # `ranked` makes one example per ordered pair of a row
            examples += made if isinstance(made, list) else [made]
        except DataError as err:
            if cfg.on_error == "raise":
                raise
            bad.append(err)
    if cfg.on_error == "raise" and read_errors:
        raise read_errors[0]
    for err in sorted(bad, key=_line_of):
        report.add(err)
    cap = cfg.max_skipped if cfg.max_skipped >= 1 else cfg.max_skipped * report.rows
    if report.skipped > cap:
        allowed = (f"{cfg.max_skipped:g} rows" if cfg.max_skipped >= 1
                   else f"{cfg.max_skipped:g} of the rows = {cap:g}")
        raise DataError(src.path, None, None,
                        f"{report.skipped} of {report.rows} rows are bad, more than data.max_skipped "
                        f"allows ({allowed}): {report.summary()}; first: {min(bad, key=_line_of)}")
    return examples, report


# ---------------------------------------------------------------- splits and weights

@dataclass
class SourceCounts:
    """What happened to one source's rows, step by step."""

    path: str
    part: str  # "train" or "eval"
    read: int = 0  # rows seen in the file
    skipped: int = 0  # bad rows left out (on_error: skip)
    cut: int = 0  # good rows past `training_size`
    held_out: int = 0  # rows moved to the validation split
    used: int = 0  # rows in the split after weighting
    weight: float = 1.0
    skips: SkipReport | None = None
    phrasings: PhrasingCounts | None = None  # templates and shot counts drawn, when the source sets them


@dataclass
class SplitReport:
    """Per-source counts of `build_splits`, printed before training."""

    sources: list[SourceCounts]
    train: int
    eval: int
    eval_from: str  # how the eval split was made, in words
    eval_in_train: int = 0  # eval examples whose content also appears in train (duplicates in the data)

    def lines(self) -> list[str]:
        width = max(len(s.path) for s in self.sources)
        out = []
        for s in self.sources:
            steps = f"read {s.read}  skipped {s.skipped}"
            if s.part == "train":
                steps += f"  cut {s.cut}  held out {s.held_out}  weight {s.weight:g}"
            out.append(f"{s.part:<5}  {s.path:<{width}}  {steps}  -> {s.used}")
        for s in self.sources:
            out += s.skips.lines() if s.skips else []
        out += [f"phrased {s.phrasings.line(s.path)}" for s in self.sources if s.phrasings]
        out.append(f"train {self.train} rows, eval {self.eval} rows ({self.eval_from})")
        if self.eval_in_train:
            out.append(f"note: {self.eval_in_train} eval rows have identical copies in train (duplicates in the data)")
        return out


def _held_out_count(size: float, total: int) -> int:
    """`val_set_size` as a row count: >= 1 is a count, 0 < x < 1 a fraction (rounded, at least 1)."""
    if size == 0:
        return 0
    if size >= 1:
        if not float(size).is_integer():
            raise ConfigError(f"data.val_set_size: {size:g} is neither a whole count (>= 1) nor a fraction (< 1)")
        return int(size)
    return max(1, int(size * total + 0.5))


def _weighted(rows: list[Example], weight: float, rng: random.Random) -> list[Example]:
    """floor(weight) copies of `rows`, plus a seeded sample of round(frac * len) rows in file order."""
    whole = int(weight)
    take = int((weight - whole) * len(rows) + 0.5)
    sample = sorted(rng.sample(range(len(rows)), take)) if take else []
    return rows * whole + [rows[i] for i in sample]


def _sampled(rows: list[Example], size: int | None, rng: random.Random) -> list[Example]:
    """A seeded sample of `size` rows in file order (all of them when there are no more)."""
    if size is None or len(rows) <= size:
        return rows
    return [rows[i] for i in sorted(rng.sample(range(len(rows)), size))]


def _phrased(rows: list[Example], pool: list[Example], src: DataSource, seed: int,
             counts: SourceCounts | None = None) -> list[Example]:
    """`rows` phrased as `src` asks (unchanged when it sets no phrasings or shots); `counts` tallies them."""
    if src.phrasings is None and src.shots == [0]:
        return rows
    if counts is not None:
        counts.phrasings = counts.phrasings or PhrasingCounts()
    return phrase_rows(rows, pool, src, seed, counts.phrasings if counts is not None else None)


def _content(ex: Example) -> tuple:
    if ex.responses is not None:
        return tuple(tuple((m.role, m.content, m.context) for m in turns)
                     for turns in (ex.messages, *ex.responses)) + (ex.label,)
    if ex.messages is not None:
        return tuple((m.role, m.content, m.context) for m in ex.messages)
    return tuple((s.text, s.train) for s in ex.segments or ())


def build_splits(cfg: DataConfig, seed: int) -> tuple[list[Example], list[Example], SplitReport]:
    """Training and evaluation examples of `cfg`, deterministic for a seed, and their report."""
    counts: list[SourceCounts] = []
    kept: list[list[Example]] = []
    first = cfg.training_size if cfg.training_sample == "first" else None
    for src in cfg.datasets:
        examples, skips = load_examples(src, cfg)
        rows = examples[:first] if first else examples
        counts.append(SourceCounts(src.path, "train", read=skips.rows, skipped=skips.skipped,
                                   cut=len(examples) - len(rows), weight=src.weight, skips=skips))
        kept.append(rows)

    # 1. validation split from the union, before weighting (positions are (source, row)).
    positions = [(i, j) for i, rows in enumerate(kept) for j in range(len(rows))]
    n_val = _held_out_count(cfg.val_set_size, len(positions))
    if n_val and n_val >= len(positions):
        raise DataError(", ".join(s.path for s in cfg.datasets), None, "val_set_size",
                        f"holding out {n_val} rows leaves none of the {len(positions)} training rows")
    chosen = sorted(random.Random(seed).sample(positions, n_val)) if n_val else []
    held = set(chosen)
    for i, _ in chosen:
        counts[i].held_out += 1

    # 2. per source: the training rows (training_sample: random samples them now), phrased, with
    #    few-shot examples drawn from those rows, then repeated or sampled by weight.
    train: list[Example] = []
    pools: list[list[Example]] = []
    for i, (src, rows) in enumerate(zip(cfg.datasets, kept)):
        remaining = [ex for j, ex in enumerate(rows) if (i, j) not in held]
        if cfg.training_sample == "random" and cfg.training_size:
            sample = _sampled(remaining, cfg.training_size, random.Random(f"tunewright-sample-{seed}-{i}"))
            counts[i].cut += len(remaining) - len(sample)
            remaining = sample
        pools.append(remaining)
        remaining = _phrased(remaining, remaining, src, seed, counts[i])
        used = _weighted(remaining, src.weight, random.Random(f"tunewright-weight-{seed}-{i}"))
        counts[i].used = len(used)
        train += used
    eval_rows = [ex for i, j in chosen for ex in _phrased([kept[i][j]], pools[i], cfg.datasets[i], seed)]
    if not train:
        detail = "; ".join(f"{c.path}: read {c.read}, skipped {c.skipped}, held out {c.held_out}, "
                           f"weight {c.weight:g}" for c in counts)
        raise DataError(", ".join(c.path for c in counts), None, None, f"no training rows left ({detail})")

    # 3. evaluation: separate sources replace the held-out split.
    if cfg.eval_datasets:
        eval_rows, eval_from = [], "from data.eval_datasets"
        for src in cfg.eval_datasets:
            examples, skips = load_examples(src, cfg)
            counts.append(SourceCounts(src.path, "eval", read=skips.rows, skipped=skips.skipped,
                                       used=len(examples), weight=src.weight, skips=skips))
            eval_rows += _phrased(examples, examples, src, seed, counts[-1])
    elif n_val:
        eval_from = f"held out by data.val_set_size={cfg.val_set_size:g}, seed {seed}"
    else:
        eval_from = "no data.val_set_size or data.eval_datasets"

    seen = {_content(ex) for ex in train}
    dupes = sum(_content(ex) in seen for ex in eval_rows)
    report = SplitReport(counts, train=len(train), eval=len(eval_rows), eval_from=eval_from, eval_in_train=dupes)
    return train, eval_rows, report
