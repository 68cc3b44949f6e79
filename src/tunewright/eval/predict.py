"""`tunewright predict RUN --data F`: a trained classification head's label and class probabilities
for every row of a file.

    tunewright predict runs/sentiment --data test.jsonl --out predictions.jsonl

Rows are read with the run's own data settings (its format, columns and tabular options, from the
run folder's config.yaml; `--format` overrides) and encoded exactly as in training (the objective's
`encode`, the tokenizer saved in final/). One JSON line per row:

    {"line": 3, "label": "positive", "probabilities": {"negative": 0.08, "positive": 0.92}, "reference": "positive"}

multi_label rows give `labels` (every class at P >= 0.5), regression rows `value`. A reward model
(objective reward) scores each answer of a preference row, encoded as it trained:

    {"line": 3, "chosen": 1.92, "rejected": -0.35}        ({"line", "score"} for an unpaired row)

The model is the run's final/ loaded through its method (models/trained.py), so a LoRA adapter, a
full fine-tune and a merged folder predict alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunewright.errors import ConfigError

__all__ = ["predict_rows", "predict_examples", "load_classifier", "predict_file"]


def _run_settings(path: Path) -> tuple[dict, dict]:
    """(the run's first training source, its data section) from config.yaml beside final/, or {}."""
    import yaml

    for folder in (path, path.parent):
        config = folder / "config.yaml"
        if config.is_file() and (folder / "final").exists():
            raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            data = raw.get("data") or {}
            return (data.get("datasets") or [{}])[0], data
    return {}, {}


def predict_rows(run: str | Path, data: str | Path, data_format: str | None = None, batch_size: int = 8) -> list[dict]:
    """One dict per row of `data` (see the module docstring), in file order."""
    from tunewright.config import DataConfig, DataSource
    from tunewright.data.mixture import load_examples
    from tunewright.models.trained import resolve_trained, run_record
    from tunewright.objectives import OBJECTIVES

    folder = resolve_trained(run)
    model, tokenizer = load_classifier(run)
    source, data_section = _run_settings(Path(run) if Path(run).name != "final" else folder.parent)
    src = DataSource(path=str(data), format=data_format or source.get("format", "classification"),
                     columns=source.get("columns") or {}, tabular=source.get("tabular"))
    cutoff = data_section.get("cutoff_len", 512)
    record = run_record(folder)
    objective = OBJECTIVES.get(record.get("objective") or "classification")
    if hasattr(objective, "predict_examples"):  # a head that scores answers (reward): its own encoding
        from tunewright.data.templates import resolve_template

        data_cfg = DataConfig(datasets=[src], **{k: data_section[k] for k in _PAIR_SETTINGS if k in data_section})
        examples, _ = load_examples(src, data_cfg)
        template = resolve_template(record.get("template"), tokenizer)
        return objective.predict_examples(model, tokenizer, examples, template, data_cfg, batch_size)
    examples, _ = load_examples(src, DataConfig(datasets=[src], cutoff_len=cutoff))
    return predict_examples(model, tokenizer, examples, cutoff, batch_size)


# the run's data settings that decide how a pair is encoded (pairs.encode_answers)
_PAIR_SETTINGS = ("cutoff_len", "truncation", "max_prompt_len", "min_response_words", "system_prompt")


def load_classifier(path, base: str | None = None):
    """(model, tokenizer) of a trained classification head; a one-line error for anything else."""
    from tunewright.models.load import head_of
    from tunewright.models.trained import load_trained, run_record
    from tunewright.objectives import classification

    model, tokenizer = load_trained(path, base=base)
    if head_of(model) != classification.HEAD:
        trained = run_record(path).get("objective", "causal_lm")
        raise ConfigError(f"{path}: trained with objective {trained!r}, not a classification head (use generate, "
                          f"eval's generate or score task for a language model)")
    return model, tokenizer


def predict_examples(model, tokenizer, examples, cutoff_len: int = 512, batch_size: int = 8) -> list[dict]:
    """Each formatted row's prediction (module docstring), encoded as the classification objective
    encodes it for training."""
    from tunewright.config import DataConfig, DataSource
    from tunewright.objectives import classification

    data_cfg = DataConfig(datasets=[DataSource(path="-")], cutoff_len=cutoff_len)
    config = model.config
    problem = {v: k for k, v in classification.PROBLEM_TYPES.items()}.get(config.problem_type, "single_label")
    names = [config.id2label[i] for i in range(config.num_labels)]
    out: list[dict] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        encoded = []
        for ex in chunk:
            row = classification.encode(ex, tokenizer, "", data_cfg)
            if isinstance(row, str):  # dropped by the run's own truncation rule: said, not skipped silently
                raise ConfigError(f"{ex.source}:{ex.line}: the row is {row.replace('_', ' ')} (data.cutoff_len "
                                  f"{cutoff_len})")
            encoded.append([row])
        batch = classification.collate(encoded, tokenizer.pad_token_id, False)
        with torch.no_grad():
            logits = classification.classifier_logits(model, batch).float()
        for ex, row_logits, reference in zip(chunk, logits, batch["label_names"]):
            out.append({"line": ex.line, **_prediction(row_logits, names, problem), "reference": reference})
    return out


def _prediction(logits: torch.Tensor, names: list[str], problem: str) -> dict:
    if problem == "regression":
        return {"value": float(logits[0])}
    if problem == "multi_label":
        probs = torch.sigmoid(logits).tolist()
        return {"labels": [n for n, p in zip(names, probs) if p >= 0.5], "probabilities": dict(zip(names, probs))}
    probs = torch.softmax(logits, dim=-1).tolist()
    return {"label": names[int(logits.argmax())], "probabilities": dict(zip(names, probs))}


def predict_file(run, data, out: Path | None = None, data_format: str | None = None, echo=print) -> list[dict]:
    """`predict_rows`, written as jsonl to `out` (a new file) or, without it, echoed line by line."""
    rows = predict_rows(run, data, data_format)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    if out is None:
        for line in lines:
            echo(line)
        return rows
    out = Path(out)
    if out.exists():
        raise ConfigError(f"predict --out: {out} exists; choose a new file")
    try:
        out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"predict --out: {out}: cannot write ({err.strerror or err})") from None
    return rows
