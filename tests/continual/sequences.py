"""A two-task classification sequence on a tiny model: sentiment (neg, pos), then topics (sport,
sci), 16 training and 8 test rows each, words that tell the classes apart. Used by the continual
tests (through conftest's `sequence_raw`) and the reliability suite's resume test."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = {"neg": "bad awful poor", "pos": "good great fine", "sport": "ball goal team", "sci": "atom cell star"}


def _rows(labels: list[str], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(WORDS[labels[i % 2]].split()) for _ in range(4)) + f" {i}",
             "label": labels[i % 2]} for i in range(n)]


def sequence_config(folder: Path, **changes) -> dict:
    """A continual config dict over task files written in `folder` (full fine-tuning, 4 steps a task;
    the model a placeholder name: a test that trains gives `model={"name": tiny_model_dir("llama")}`)."""
    tasks = []
    for name, labels in (("sentiment", ["neg", "pos"]), ("topics", ["sport", "sci"])):
        files = {}
        for split, n, seed in (("train", 16, 1), ("test", 8, 2)):
            files[split] = Path(folder) / f"{name}_{split}.jsonl"
            files[split].write_text("".join(json.dumps(r) + "\n" for r in _rows(labels, n, seed)))
        tasks.append({"name": name, "labels": labels,
                      "datasets": [{"path": str(files["train"]), "format": "classification"}],
                      "eval_datasets": [{"path": str(files["test"]), "format": "classification"}]})
    return {"scenario": "class_incremental", "tasks": tasks, "model": {"name": "tiny-llama"},
            "method": {"name": "full"},
            "train": {"max_steps": 4, "batch_size": 4, "micro_batch_size": 4, "learning_rate": 1e-3, "seed": 5},
            "output": {"dir": str(Path(folder) / "runs"), "name": "seq"}, **changes}
