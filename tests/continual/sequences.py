"""A two-task classification sequence on a tiny model: sentiment (neg, pos), then topics (sport,
sci), 16 training and 8 test rows each, words that tell the classes apart. Used by the continual
tests (through conftest's `sequence_raw`) and the reliability suite's resume test. `probes_config`
adds two probes (never trained): arithmetic (answer_accuracy) and capitals (answer_loss)."""

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


def probe_rows(name: str) -> list[dict]:
    """10 `messages` rows (a question, a short answer) of probe `name`: arithmetic or capitals (whose
    last answer is longer than the others: a short data.cutoff_len truncates it alone)."""
    if name == "arithmetic":
        return [{"messages": [{"role": "user", "content": f"What is {a} plus {a + 1}?"},
                              {"role": "assistant", "content": str(2 * a + 1)}]} for a in range(10)]
    places = ["France is Paris", "Italy is Rome", "Spain is Madrid"]
    return [{"messages": [{"role": "user", "content": f"Name the capital, please ({i})."},
                          {"role": "assistant", "content": f"The capital of {places[i % 3]}."
                                                           + " Count from one to ten." * (i == 9)}]}
            for i in range(10)]


def probes_config(folder: Path) -> dict:
    """The changes that add the two probes to `sequence_config`: their files written in `folder`,
    rendered with the alpaca template (the tiny tokenizers have no chat template of their own)."""
    probes = []
    for name, metric in (("arithmetic", "answer_accuracy"), ("capitals", "answer_loss")):
        path = Path(folder) / f"probe_{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in probe_rows(name)))
        probes.append({"name": name, "metric": metric, "eval_datasets": [{"path": str(path), "format": "messages"}]})
    return {"probes": probes, "data": {"template": "alpaca"}}
