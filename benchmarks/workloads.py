"""Workloads: structured text from the lab's synthetic world, so losses mean something.

    dense    every row exactly `seq` tokens of world text, loss on all tokens (pretraining-like)
    long     the same at long context (batch 1)
    varlen   SFT rows with lognormal lengths (median ~250 tokens), the prompt half masked; the
             metric is non-pad tokens/s, so padding is wasted work and packing is the lever

Both systems read the rows through tunewright's data pipeline (same tokenizer, same ids, same
labels, same order), so they train on identical tokens; only batching differs where the system
does (B0's padding collator versus our padding-free packing).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

WORLD_TEXT = Path(__file__).resolve().parents[1] / "recipes" / "data" / "world_text"
VARLEN_MEDIAN, VARLEN_SIGMA, VARLEN_MAX = 250, 0.7, 1536


def corpus() -> list[str]:
    rows = []
    for split in ("train", "validation", "test"):
        with open(WORLD_TEXT / f"{split}.jsonl") as f:
            rows += [json.loads(line)["text"] for line in f if line.strip()]
    return rows


def _text_of(paragraphs: list[str], lengths: list[int], tokens: int, rng: random.Random) -> str:
    """Paragraphs drawn at random until they hold at least `tokens` tokens."""
    out, total = [], 0
    while total < tokens:
        i = rng.randrange(len(paragraphs))
        out.append(paragraphs[i])
        total += lengths[i] + 1
    return " ".join(out)


def _exactly(text: str, tokens: int, tokenizer) -> str:
    """The prefix of `text` that is `tokens` tokens long (about: re-encoding may merge a boundary)."""
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:tokens])


def varlen_lengths(n: int, seed: int, longest: int = VARLEN_MAX) -> list[int]:
    rng = random.Random(seed)
    return [max(16, min(longest, round(rng.lognormvariate(math.log(VARLEN_MEDIAN), VARLEN_SIGMA))))
            for _ in range(n)]


def write_workload(kind: str, tokenizer, seq: int, n_rows: int, path: Path, seed: int = 0) -> Path:
    """Write `n_rows` rows of workload `kind` as JSON lines (text, or prompt/completion)."""
    paragraphs = corpus()
    lengths = [len(ids) for ids in tokenizer(paragraphs, add_special_tokens=False)["input_ids"]]
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        if kind in ("dense", "long"):  # longer than seq: the pipeline truncates (and counts it)
            for _ in range(n_rows):
                f.write(json.dumps({"text": _text_of(paragraphs, lengths, seq + 32, rng)}) + "\n")
        elif kind == "varlen":
            # the template adds ~20 tokens: stay under the cutoff, so no row is truncated
            for total in varlen_lengths(n_rows, seed, min(VARLEN_MAX, seq - 48)):
                prompt = round(total * rng.uniform(0.3, 0.7))
                row = {"prompt": _exactly(_text_of(paragraphs, lengths, prompt, rng), prompt, tokenizer),
                       "completion": _exactly(_text_of(paragraphs, lengths, total - prompt, rng), total - prompt, tokenizer)}
                f.write(json.dumps(row) + "\n")
        else:
            raise ValueError(f"unknown workload {kind!r}; known: dense, long, varlen")
    return path


def data_config(kind: str, path: Path, seq: int, packing: bool) -> dict:
    """tunewright's `data:` section for a workload file."""
    if kind == "varlen":
        return {"datasets": [{"path": str(path), "format": "prompt_completion"}], "template": "alpaca",
                "cutoff_len": seq, "packing": packing}
    return {"datasets": [{"path": str(path), "format": "text"}], "cutoff_len": seq, "packing": packing}
