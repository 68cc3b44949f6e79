"""Collecting preferences: sample two answers per prompt, label them in the terminal, import a
Label Studio pairwise export, and compare two evaluation candidates by a human win rate.

    tunewright data pairs MODEL --prompts P --out pairs.jsonl        two seeded samples per prompt
    tunewright data label pairs.jsonl --out prefs.jsonl              1 / 2 / tie / skip / quit; resumable
    tunewright data label --from-label-studio export.json --out prefs.jsonl
    tunewright data label outputs-a.jsonl --against outputs-b.jsonl --out judged.jsonl   win rate of a over b

A pairs file holds {prompt, response_1, response_2} rows; `data pairs` writes the sampling settings
(model, seed, temperature, top_p, max_new_tokens) beside it in `<out>.settings.json`. The labeller
writes `preference` rows ({prompt, chosen, rejected, line}: line is the pairs file's) and, for ties and
skips, {line, choice} rows in `<out>.skipped.jsonl`; every decision rewrites one of the two files
atomically (disk.write_text_atomic), so an interrupted session loses nothing it showed as saved and a
new one starts at the first line neither file holds.

Comparing candidates: rows of two `tunewright eval` outputs files are paired by line; the two answers
are shown in a seeded random order (the labeller does not know which is which), and the win rate of
the first candidate counts a tie as half a win: p = (wins + ties / 2) / n over the n decided rows,
with the Wilson score interval (Wilson 1927) at 95%:

    (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n),   z = 1.96
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from tunewright.disk import write_text_atomic, writing
from tunewright.errors import ConfigError, DataError

__all__ = ["sample_pairs", "read_pairs", "label", "from_label_studio", "candidate_pairs", "wilson", "win_rate",
           "CHOICES"]

# what the labeller accepts -> the decision it records
CHOICES = {"1": "1", "2": "2", "t": "tie", "tie": "tie", "s": "skip", "skip": "skip", "q": "quit", "quit": "quit"}


def _jsonl(path: Path) -> list[dict]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as err:
                raise DataError(str(path), n, None, f"not JSON ({err})") from None
    return rows


def _append(path: Path, row: dict) -> None:
    """`row` as the last line of `path`, the whole file rewritten atomically (never half a line)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    with writing(path, "append a label"):
        write_text_atomic(path, old + json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- sampling

def sample_pairs(model: str, prompts: Path, out: Path, *, seed: int = 0, temperature: float = 1.0,
                 top_p: float = 0.95, max_new_tokens: int = 128, template: str | None = None,
                 overwrite: bool = False) -> list[dict]:
    """Two sampled answers per prompt (prompts: jsonl rows with `prompt`), the second with seed + 1,
    each prompt rendered with `template` (default: the run's, else the tokenizer's own)."""
    from tunewright.data.templates import resolve_template
    from tunewright.eval.generate import generate
    from tunewright.models.aliases import resolve_model_name
    from tunewright.models.trained import load_trained, run_record

    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"data pairs --out: {out} exists; choose a new file or pass --overwrite")
    rows = _jsonl(prompts)
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise DataError(str(prompts), n, "prompt", "a non-empty string is required")
    model_obj, tokenizer = load_trained(resolve_model_name(model))
    template = resolve_template(template or run_record(resolve_model_name(model)).get("template"), tokenizer)
    settings = {"model": model, "seed": seed, "temperature": temperature, "top_p": top_p,
                "max_new_tokens": max_new_tokens, "template": template, "prompts": str(prompts)}
    texts = [r["prompt"] for r in rows]
    answers = [generate(model_obj, tokenizer, texts, template=template, do_sample=True, temperature=temperature,
                        top_p=top_p, max_new_tokens=max_new_tokens, seed=seed + k) for k in (0, 1)]
    pairs = [{"prompt": p, "response_1": a, "response_2": b} for p, a, b in zip(texts, *answers)]
    with writing(out, "write the pairs"):
        write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs))
        write_text_atomic(out.with_name(out.name + ".settings.json"), json.dumps(settings, indent=1) + "\n")
    return pairs


def read_pairs(path: Path) -> list[dict]:
    rows = _jsonl(path)
    for n, row in enumerate(rows, 1):
        for key in ("prompt", "response_1", "response_2"):
            if not isinstance(row.get(key), str):
                raise DataError(str(path), n, key,
                                "a string is required (a pairs file: prompt, response_1, response_2)")
    return rows


# ---------------------------------------------------------------- the terminal labeller

def _done(out: Path) -> set[int]:
    """Lines of the pairs file already decided: in the output or in its skipped file."""
    files = [out, out.with_name(out.stem + ".skipped.jsonl")]
    return {int(r["line"]) for f in files if f.exists() for r in _jsonl(f)}


def label(pairs: list[dict], out: Path, read=input, echo=print, flip_seed: int | None = None) -> dict:
    """Ask for a decision on each undecided pair, in file order; returns the counts of this session.

    `flip_seed`: show each pair's answers in a seeded random order (blind comparison of candidates);
    the decision is recorded for the pair as stored (1 = response_1)."""
    out = Path(out)
    skipped = out.with_name(out.stem + ".skipped.jsonl")
    done = _done(out)
    counts = {"1": 0, "2": 0, "tie": 0, "skip": 0, "left": 0}
    rng = random.Random(flip_seed)
    flips = [rng.random() < 0.5 if flip_seed is not None else False for _ in pairs]
    todo = [(n, row) for n, row in enumerate(pairs, 1) if n not in done]
    echo(f"{len(done)} of {len(pairs)} pairs labelled already; {len(todo)} to go. Keys: 1, 2, tie, skip, quit")
    for i, (n, row) in enumerate(todo):
        first, second = ("response_2", "response_1") if flips[n - 1] else ("response_1", "response_2")
        echo(f"\n--- pair {n} of {len(pairs)} ---\nPROMPT:\n{row['prompt']}\n\n"
             f"[1]:\n{row[first]}\n\n[2]:\n{row[second]}")
        while True:
            try:
                answer = read("1 / 2 / tie / skip / quit > ").strip().lower()
            except EOFError:  # the input ended (a pipe): stop as `quit` does
                answer = "quit"
            if answer in CHOICES:
                break
            echo(f"{answer!r}: type 1, 2, tie, skip or quit")
        choice = CHOICES[answer]
        if choice == "quit":
            counts["left"] = len(todo) - i
            break
        if choice in ("1", "2"):
            better = first if choice == "1" else second
            worse = second if better == first else first
            _append(out, {"prompt": row["prompt"], "chosen": row[better], "rejected": row[worse], "line": n,
                          "choice": better[-1]})
            counts[better[-1]] += 1
        else:
            _append(skipped, {"line": n, "choice": choice})
            counts[choice] += 1
    return counts


# ---------------------------------------------------------------- Label Studio

def from_label_studio(export: Path, out: Path, fields: tuple[str, str, str] = ("prompt", "text1", "text2"),
                      overwrite: bool = False) -> dict:
    """A Label Studio JSON export of a Pairwise project -> preference jsonl; counts.

    Each task: {"data": {prompt, text1, text2}, "annotations": [{"result": [{"type": "pairwise",
    "value": {"selected": "left" | "right"}}], "was_cancelled": false}]}; the first annotation that
    is not cancelled and holds a pairwise result decides (left = text1, as the template's
    toName="text1,text2" orders them). Tasks without one are counted, not written."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"--out: {out} exists; choose a new file or pass --overwrite")
    try:
        tasks = json.loads(Path(export).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or err
        raise ConfigError(f"{export}: not a Label Studio JSON export ({why})") from None
    if not isinstance(tasks, list):
        raise ConfigError(f"{export}: a Label Studio JSON export is a list of tasks, got {type(tasks).__name__}")
    prompt_key, left_key, right_key = fields
    rows, counts = [], {"tasks": len(tasks), "written": 0, "unlabelled": 0}
    for i, task in enumerate(tasks):
        data = task.get("data") or {}
        for key in fields:
            if not isinstance(data.get(key), str):
                raise DataError(str(export), None, f"[{i}].data.{key}", "a string is required")
        selected = next((r.get("value", {}).get("selected") for a in task.get("annotations") or []
                         if not a.get("was_cancelled") for r in a.get("result") or [] if r.get("type") == "pairwise"),
                        None)
        if selected not in ("left", "right"):
            counts["unlabelled"] += 1
            continue
        better, worse = (left_key, right_key) if selected == "left" else (right_key, left_key)
        rows.append({"prompt": data[prompt_key], "chosen": data[better], "rejected": data[worse],
                     "label_studio_id": task.get("id")})
    with writing(out, "write the preferences"):
        write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    counts["written"] = len(rows)
    return counts


# ---------------------------------------------------------------- two candidates compared

def candidate_pairs(first: Path, second: Path) -> list[dict]:
    """Rows of two `tunewright eval` outputs files (outputs-<name>.jsonl), paired by their line."""
    a, b = _jsonl(first), {r.get("line"): r for r in _jsonl(second)}
    pairs = []
    for n, row in enumerate(a, 1):
        other = b.get(row.get("line"))
        if other is None:
            raise DataError(str(first), n, "line", f"row {row.get('line')} has no row of the same line in {second}")
        prompt = row["prompt"] if isinstance(row["prompt"], str) else "\n".join(
            f"{m['role']}: {m['content']}" for m in row["prompt"])
        pairs.append({"prompt": prompt, "response_1": row["output"], "response_2": other["output"],
                      "line": row.get("line")})
    return pairs


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes / n (module docstring)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # clamped: at 0 or n successes rounding must not put a bound outside [0, 1]
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def win_rate(out: Path) -> dict:
    """The first candidate's win rate over the decided rows of a comparison (ties half), with its
    95% Wilson interval; skipped rows are left out."""
    out = Path(out)
    decided = _jsonl(out) if out.exists() else []
    skipped = out.with_name(out.stem + ".skipped.jsonl")
    ties = sum(r["choice"] == "tie" for r in _jsonl(skipped)) if skipped.exists() else 0
    wins = sum(r["choice"] == "1" for r in decided)
    n = len(decided) + ties
    low, high = wilson(wins + ties / 2, n)
    return {"wins": wins, "losses": len(decided) - wins, "ties": ties, "n": n,
            "win_rate": (wins + ties / 2) / n if n else None, "ci95": [low, high]}
