"""What a run trained, loaded for generation, evaluation or merging: a run's `final/`, a
checkpoint, a PEFT adapter or a plain model folder.

    resolve_trained(path)    the folder holding the weights (a run folder -> its final/); an
                             unfinished or damaged checkpoint is refused
    run_record(path)         what the run recorded in final/tunewright.json (base, template, ...)
    load_trained(path)       (model in eval mode, tokenizer), the base loaded first for an adapter
"""

from __future__ import annotations

import json
from pathlib import Path

from tunewright.errors import ConfigError
from tunewright.models.load import (ModelConfig, read_json, base_model, load_model, load_tokenizer,
                                    resize_embeddings)

__all__ = ["resolve_trained", "run_record", "load_trained"]


def resolve_trained(path) -> Path:
    """The folder holding weights: `path` itself (adapter, model, checkpoint) or a run's `final/`.
    A checkpoint must be complete and match its manifest; a half-written `.tmp-` save is refused."""
    p = Path(path)
    for cand in (p, p / "final"):
        if (cand / "adapter_config.json").is_file() or (cand / "config.json").is_file():
            _refuse_unfinished(cand)
            return cand
    if not p.exists():
        raise ConfigError(f"{path}: no such folder")
    raise ConfigError(f"{path}: neither a PEFT adapter (adapter_config.json), a model folder (config.json) "
                      f"nor a run folder with final/")


def _refuse_unfinished(folder: Path) -> None:
    from tunewright.training.checkpoint import verify

    if folder.name.startswith(".tmp-"):
        raise ConfigError(f"{folder}: a save that did not finish (a .tmp- folder); use final/ or a complete "
                          f"checkpoint (checkpoints/step-N)")
    if (folder / "trainer_state.json").is_file():  # a checkpoint: usable only when complete and intact
        problem = verify(folder)
        if problem is not None:
            raise ConfigError(f"{folder}: not a usable checkpoint: {problem}")


def _has_tokenizer(p: Path) -> bool:
    return (p / "tokenizer_config.json").is_file() or (p / "tokenizer.json").is_file()


def run_record(path) -> dict:
    """What a run recorded in final/`tunewright.json` (base model, template, system prompt, raw
    text, revision), for prompting it as it was trained. Empty for a plain model or a checkpoint,
    and for an unreadable record: it only holds defaults."""
    record = resolve_trained(path) / "tunewright.json"
    try:
        return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    except (OSError, ValueError):
        return {}


def load_trained(path, dtype: str = "float32", base: str | None = None):
    """Load a saved output for inference -> (model in eval mode, tokenizer).

    `path`: a PEFT adapter folder (its base from `base_model_name_or_path`, or `base`), a plain
    transformers folder, or a run folder (its `final/`). The tokenizer comes from the folder when
    saved there, else from the base; a tokenizer longer than the base vocabulary grows the base
    embeddings first (the adapter then carries the trained rows). A `generation_config.json` saved
    in the folder replaces the base's (it holds the end-of-turn ids).
    """
    from transformers import GenerationConfig

    folder = resolve_trained(path)
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        # tunewright.json records the name the user trained on (e.g. the `smollm2-135m-instruct`
        # alias), which resolves on any machine; peft records the resolved local path
        record = read_json(folder / "tunewright.json", "run record") if (folder / "tunewright.json").is_file() else {}
        base_name = base or record.get("base_model") or read_json(adapter, "adapter").get("base_model_name_or_path")
        revision = None if base else record.get("revision")  # the base weights the adapter was trained on
        if not base_name:
            raise ConfigError(f"{adapter}: names no base model (base_model_name_or_path); pass the base explicitly")
        tokenizer = load_tokenizer(ModelConfig(name=str(base_name), revision=revision,
                                               tokenizer=str(folder) if _has_tokenizer(folder) else None))
        model = load_model(ModelConfig(name=str(base_name), dtype=dtype, revision=revision))
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            resize_embeddings(model, tokenizer)
        from tunewright.models.methods.lora import load_adapter

        model = load_adapter(model, folder, trainable=False, field="adapter")
    else:
        tok_source = str(folder) if _has_tokenizer(folder) else base
        if tok_source is None:
            raise ConfigError(f"{folder}: holds no tokenizer; pass the base model (or a tokenizer folder) as base")
        tokenizer = load_tokenizer(ModelConfig(name=tok_source))
        model = load_model(ModelConfig(name=str(folder), dtype=dtype))
    if (folder / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(folder)
        base_model(model).generation_config = gen
    return model.eval(), tokenizer
