"""What a run trained, loaded for generation, evaluation or merging: a run's `final/`, a
checkpoint, a PEFT adapter or a plain model folder.

    resolve_trained(path)    the folder holding the weights (a run folder -> its final/); an
                             unfinished or damaged checkpoint is refused
    run_record(path)         what the run recorded in final/tunewright.json (base, template, ...)
    method_of(folder)        (name, module) of the method that reads the folder (models/methods)
    load_trained(path)       (model in eval mode, tokenizer): the base first unless the folder is a
                             whole model, then the method's `load_for_inference`
    load_base(folder)        (base model, tokenizer) an adapter folder goes on (models/adapters.py
                             puts several adapters on one)

Nothing here knows a method: what a folder holds is read through the method that saved it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from tunewright.errors import ConfigError
from tunewright.models.load import (ModelConfig, read_json, base_model, dequantize, load_model, load_tokenizer,
                                    resize_embeddings)
from tunewright.models.methods import METHODS
from tunewright.models.saved import OWN_ADAPTER, PLAIN, saved_format

__all__ = ["resolve_trained", "run_record", "import_plugins", "method_of", "load_trained", "load_base",
           "use_generation_config", "base_name_of", "recorded_head"]


def resolve_trained(path) -> Path:
    """The folder holding weights: `path` itself (adapter, model, checkpoint) or a run's `final/`.
    A checkpoint must be complete and match its manifest; a half-written `.tmp-` save is refused."""
    p = Path(path)
    for cand in (p, p / "final"):
        # a run record alone marks a folder too: a method may save in a format of its own
        if saved_format(cand) is not None or (cand / "tunewright.json").is_file():
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
    return _record(resolve_trained(path))


def _record(folder: Path) -> dict:
    record = folder / "tunewright.json"
    try:
        found = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def import_plugins(folder: Path) -> None:
    """Import the plug-ins the run that wrote `folder` used (its record, or for a checkpoint its run's
    config.yaml), so a plug-in method or objective can read it; a missing one is a one-line error."""
    from tunewright.plugins import load_plugins

    plugins = _record(folder).get("plugins")
    if plugins is None and (folder / "trainer_state.json").is_file():  # a checkpoint: checkpoints/step-N
        config = folder.parent.parent / "config.yaml"
        if config.is_file():
            import yaml
            try:
                plugins = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("plugins")
            except (OSError, yaml.YAMLError, AttributeError):
                plugins = None
    if plugins:
        load_plugins(plugins, folder, f"{folder}: the run's plugins")


def method_of(folder) -> tuple[str, ModuleType]:
    """(name, module) of the registered method that reads `folder` (as `resolve_trained` returns it).

    The run record names the method the run trained with; a folder without one (a checkpoint, an
    adapter or a model from elsewhere) goes to the first method, by name, whose `FORMAT` is the
    folder's: `full` for a plain model folder, `lora` for a LORA adapter."""
    folder = Path(folder)
    found = saved_format(folder)
    name = _record(folder).get("method")
    if isinstance(name, str) and name:
        if name not in METHODS:
            raise ConfigError(f"{folder}: its run record (tunewright.json) names method {name!r}, which is not "
                              f"registered; known: {', '.join(METHODS.names())}")
        method = METHODS.get(name)
        if found is not None and found != method.FORMAT:
            raise ConfigError(f"{folder}: its run record names method {name!r}, which saves {method.FORMAT}, but "
                              f"the folder holds {found or 'an untyped adapter'}")
        return name, method
    readers = [n for n in METHODS.names() if METHODS.get(n).FORMAT == found]
    if found is None:
        raise ConfigError(f"{folder}: holds no adapter or model, and no run record naming its method")
    if not readers:
        formats = ", ".join(sorted({METHODS.get(n).FORMAT for n in METHODS.names()}))
        what = f"an adapter of PEFT type {found}" if found else "an adapter without a peft_type (adapter_config.json)"
        raise ConfigError(f"{folder}: holds {what}, which no registered method reads (they read: {formats})")
    return readers[0], METHODS.get(readers[0])


def load_trained(path, dtype: str = "float32", base: str | None = None):
    """Load a saved output for inference -> (model in eval mode, tokenizer).

    `path`: an adapter folder (its base from the run record or the adapter's
    `base_model_name_or_path`, or `base`), a plain transformers folder, or a run folder (its
    `final/`); the folder's method (`method_of`) puts its weights on the base. The tokenizer comes
    from the folder when saved there, else from the base; a tokenizer longer than the base
    vocabulary grows the base embeddings first (the adapter then carries the trained rows). A
    `generation_config.json` saved in the folder replaces the base's (it holds the end-of-turn ids).
    """
    folder = resolve_trained(path)
    import_plugins(folder)
    _, method = method_of(folder)
    # the head the run trained (a classifier), with the settings it was built with (its classes)
    head, settings = recorded_head(folder)
    if method.FORMAT == PLAIN:  # a whole model: the folder is its own base, its config.json says the rest
        tok_source = str(folder) if _has_tokenizer(folder) else base
        if tok_source is None:
            raise ConfigError(f"{folder}: holds no tokenizer; pass the base model (or a tokenizer folder) as base")
        tokenizer = load_tokenizer(ModelConfig(name=tok_source))
        model = load_model(ModelConfig(name=str(folder), dtype=dtype), head)
    else:  # the method's weights alone: its base first
        model, tokenizer = load_base(folder, dtype, base, head, settings)
    model = method.load_for_inference(model, folder)
    use_generation_config(model, folder)
    return model.eval(), tokenizer


def load_base(folder: Path, dtype: str = "float32", base: str | None = None, head: str | None = None,
              settings: dict | None = None):
    """(base model, tokenizer) an adapter folder goes on (see `_base_of`), with the run's head and its
    settings (a classifier's classes). The tokenizer comes from the folder when saved there; one
    longer than the base vocabulary grows the embeddings first."""
    base_name, revision = _base_of(folder, base)
    tokenizer = load_tokenizer(ModelConfig(name=base_name, revision=revision,
                                           tokenizer=str(folder) if _has_tokenizer(folder) else None))
    # a base the adapter was trained on in 4/8 bits is loaded the same way, then dequantized: the adapter
    # goes on (and merges into) the weights it was trained against, not the unquantized originals
    quantized = _record(folder).get("quantized") or {}
    model = load_model(ModelConfig(name=base_name, dtype=dtype, revision=revision, **quantized), head, settings)
    model = dequantize(model)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        resize_embeddings(model, tokenizer)
    return model, tokenizer


def use_generation_config(model, folder: Path) -> None:
    """A `generation_config.json` saved in the folder replaces the base's (it holds the end-of-turn ids)."""
    from transformers import GenerationConfig

    if (folder / "generation_config.json").is_file() and base_model(model).can_generate():  # not a head model
        base_model(model).generation_config = GenerationConfig.from_pretrained(folder)


def base_name_of(folder: Path, base: str | None = None) -> str:
    """The name of the base model an adapter folder goes on (see `_base_of`)."""
    return _base_of(folder, base)[0]


def recorded_head(folder: Path) -> tuple[str | None, dict]:
    """(head, model settings) the run recorded; (None, {}) for the architecture's own head. JSON keeps
    id2label's keys as strings: they are class ids again here."""
    record = _record(folder)
    head = record.get("head") if isinstance(record.get("head"), str) else None
    if head is None and (folder / "config.json").is_file():  # a model from elsewhere (a merged classifier)
        architectures = read_json(folder / "config.json", "model").get("architectures") or [""]
        head = "sequence_classification" if str(architectures[0]).endswith("ForSequenceClassification") else None
    settings = dict(record.get("model_config") or {})
    if isinstance(settings.get("id2label"), dict):
        settings["id2label"] = {int(k): v for k, v in settings["id2label"].items()}
    return head, settings


def _base_of(folder: Path, base: str | None) -> tuple[str, str | None]:
    """(name, revision) of the base model an adapter goes on: `base` when given; else the name the
    run recorded (e.g. the `smollm2-135m-instruct` alias, which resolves on any machine, where peft
    records the resolved local path) at the revision it trained on; else the adapter's own
    `base_model_name_or_path`."""
    if base:
        return base, None
    record = read_json(folder / "tunewright.json", "run record") if (folder / "tunewright.json").is_file() else {}
    adapter = folder / "adapter_config.json"
    if not adapter.is_file() and (folder / OWN_ADAPTER).is_file():  # an adapter of our own format
        adapter = folder / OWN_ADAPTER
    name = record.get("base_model")
    if not name and adapter.is_file():
        name = read_json(adapter, "adapter").get("base_model_name_or_path")
    if not name:
        where = adapter if adapter.is_file() else folder
        raise ConfigError(f"{where}: names no base model (base_model_name_or_path); pass the base explicitly")
    return str(name), record.get("revision")
