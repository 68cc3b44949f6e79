"""Ratings to Yes/No prompts: what `tunewright data ratings FILE --out DIR` runs (the LLM recommender
of Bao et al. 2023, "TALLRec": a user's liked and disliked items, then "Will the user like X?").

    input   rows of user, item, rating and optionally time (json/jsonl/csv/parquet; `columns` maps other
            names, e.g. {user: userId, item: title, time: timestamp})
    split   per user, in time order (ties: file order): the last `test_fraction` of the user's ratings
            are test targets, the `val_fraction` before them validation, the rest train; a user with
            fewer than 3 ratings trains only
    prompt  for a target rating at time t: the user's ratings before it (whatever their split: the
            past is known), the most recent `history` liked (rating >= threshold) and as many disliked,
            never the candidate item itself (a re-rated item is left out of its own history)

        The user liked A, B. The user disliked C. Will the user like X? Answer Yes or No.   -> Yes | No

Rows come out in the `classification` format's shape ({user, candidate, prompt, label, rating, time};
train with `columns: {text: prompt}`), so a causal LM learns the reply and `eval.labels: [No, Yes]`
scores it. Targets without any earlier rating are left out, and counted.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from tunewright.errors import ConfigError, DataError

__all__ = ["Rating", "RatingsOptions", "read_ratings", "split_by_time", "history_prompt", "ratings_to_prompts",
           "write_prompts", "SPLITS"]

SPLITS = ("train", "validation", "test")


@dataclass
class Rating:
    user: str
    item: str
    rating: float
    time: float  # the file line when the file has no time column (file order is time order)
    line: int


@dataclass
class RatingsOptions:
    threshold: float = 4.0  # a rating at or above it is a like (Yes)
    history: int = 5  # most recent liked items, and as many disliked, in a prompt
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    columns: dict[str, str] = field(default_factory=dict)  # our name (user, item, rating, time) -> the file's

    def check(self) -> None:
        if self.history < 1:
            raise ConfigError(f"data ratings: --history must be at least 1 (got {self.history})")
        if not (0 <= self.test_fraction < 1 and 0 <= self.val_fraction < 1 and self.test_fraction + self.val_fraction < 1):
            raise ConfigError(f"data ratings: --test-fraction and --val-fraction must be in [0, 1) and leave rows to "
                              f"train on (got {self.test_fraction} and {self.val_fraction})")
        unknown = set(self.columns) - {"user", "item", "rating", "time"}
        if unknown:
            raise ConfigError(f"data ratings: --columns: {sorted(unknown)[0]!r} is not one of user, item, rating, time")


def _field(row: dict, line: int, path: str, opts: RatingsOptions, name: str, required: bool = True):
    col = opts.columns.get(name, name)
    value = row.get(col)
    if value is None or (isinstance(value, str) and not value.strip()):
        if not required and col not in row:
            return None
        raise DataError(path, line, col, "missing" if col not in row else "empty")
    if isinstance(value, (dict, list, bool)):
        raise DataError(path, line, col, f"expected {'a number' if name in ('rating', 'time') else 'a name or id'}, "
                                         f"got {type(value).__name__}")
    if name in ("rating", "time"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DataError(path, line, col, f"{value!r} is not a number") from None
        if not math.isfinite(number):
            raise DataError(path, line, col, f"{value!r} is not a finite number")
        return number
    return str(value).strip()


def read_ratings(path: str | Path, opts: RatingsOptions) -> list[Rating]:
    """Every row of `path` as a Rating; a bad row stops with `file:line: column: reason`."""
    from tunewright.data.sources import read_rows
    from tunewright.schema import DataSource

    rows = read_rows(DataSource(path=str(path), format="text"))
    out = []
    for line, row in rows:
        time = _field(row, line, str(path), opts, "time", required=False)
        out.append(Rating(_field(row, line, str(path), opts, "user"), _field(row, line, str(path), opts, "item"),
                          _field(row, line, str(path), opts, "rating"), line if time is None else time, line))
    return out


def split_by_time(ratings: list[Rating], opts: RatingsOptions) -> dict[str, dict[str, list[Rating]]]:
    """{user: {split: the user's ratings of that split, in time order}} (module docstring's rule)."""
    by_user: dict[str, list[Rating]] = {}
    for r in ratings:
        by_user.setdefault(r.user, []).append(r)
    out = {}
    for user, rows in by_user.items():
        rows = sorted(rows, key=lambda r: (r.time, r.line))
        n = len(rows)
        n_test = max(1, round(n * opts.test_fraction)) if n >= 3 and opts.test_fraction else 0
        n_val = max(1, round(n * opts.val_fraction)) if n - n_test >= 3 and opts.val_fraction else 0
        cut = n - n_test - n_val
        out[user] = {"train": rows[:cut], "validation": rows[cut:n - n_test], "test": rows[n - n_test:]}
    return out


def history_prompt(earlier: list[Rating], candidate: str, opts: RatingsOptions) -> str:
    """The prompt for `candidate` given the user's `earlier` ratings (time order); the candidate itself
    never appears among them."""
    past = [r for r in earlier if r.item != candidate]
    liked = [r.item for r in past if r.rating >= opts.threshold][-opts.history:]
    disliked = [r.item for r in past if r.rating < opts.threshold][-opts.history:]
    return (f"The user liked {', '.join(liked) or 'nothing'}. The user disliked {', '.join(disliked) or 'nothing'}. "
            f"Will the user like {candidate}? Answer Yes or No.")


def ratings_to_prompts(ratings: list[Rating], opts: RatingsOptions) -> tuple[dict[str, list[dict]], dict]:
    """({split: prompt rows}, counts) for every rating that has an earlier one."""
    opts.check()
    splits = {s: [] for s in SPLITS}
    no_history = 0
    for user, parts in split_by_time(ratings, opts).items():
        timeline = [r for s in SPLITS for r in parts[s]]
        for split in SPLITS:
            for r in parts[split]:
                earlier = [e for e in timeline if (e.time, e.line) < (r.time, r.line)]
                if not [e for e in earlier if e.item != r.item]:
                    no_history += 1
                    continue
                splits[split].append({"user": user, "candidate": r.item, "prompt": history_prompt(earlier, r.item, opts),
                                      "label": "Yes" if r.rating >= opts.threshold else "No", "rating": r.rating,
                                      "time": r.time})
    yes = sum(row["label"] == "Yes" for rows in splits.values() for row in rows)
    total = sum(map(len, splits.values()))
    counts = {"ratings": len(ratings), "users": len({r.user for r in ratings}), "no_history": no_history,
              **{s: len(rows) for s, rows in splits.items()}, "yes_share": round(yes / total, 4) if total else 0.0}
    return splits, counts


def write_prompts(splits: dict[str, list[dict]], out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """`<split>.jsonl` per split into `out_dir` (refused when one exists, unless `overwrite`)."""
    out = Path(out_dir)
    paths = [out / f"{s}.jsonl" for s in SPLITS]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]}: exists; pass --overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for split, path in zip(SPLITS, paths):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in splits[split]), encoding="utf-8")
            os.replace(tmp, path)
    except OSError as err:
        raise ConfigError(f"{out}: cannot write the prompts ({err.strerror or err})") from None
    return paths
