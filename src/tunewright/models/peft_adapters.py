"""PEFT-format adapters on disk, for every method peft implements (lora, ia3, prompt, prefix).

    wrap(model, peft_cfg, what)          get_peft_model, a refusal as one ConfigError line
    load_adapter(model, path, ...)       PeftModel.from_pretrained after checking the adapter is of the
                                         expected PEFT type and fits this model's architecture
    save(model, path) / load(model, path, ...)   the adapter of a run (final/, checkpoints; resume)

What `save` writes is exactly what plain peft writes (adapter_config.json +
adapter_model.safetensors), so `PeftModel.from_pretrained` loads it without tunewright. peft
itself only warns when a layer is missing on either side; here that is an error, named.
peft is imported inside functions: the methods' Config modules import this one.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

from tunewright.errors import ConfigError

__all__ = ["wrap", "load_adapter", "save", "load", "reason", "quiet_peft", "matches", "check_names", "refuse_new_tokens"]


@contextmanager
def quiet_peft():
    """peft 0.21's noise that is not news: transformers' deprecated `is_gradient_checkpointing` read
    on wrapping, and 'Position ids are not supported' on every prompt-tuning forward (positions are
    handled by models/methods/prompt.py)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*Position ids are not supported.*")
        yield


def wrap(model, peft_cfg, what: str):
    """`get_peft_model(model, peft_cfg)`; peft's ValueError becomes `method: peft refused ...`."""
    from peft import get_peft_model

    try:
        with quiet_peft():
            return get_peft_model(model, peft_cfg)
    except ValueError as err:
        raise ConfigError(f"method: peft refused the {what} config: {str(err).strip().splitlines()[0]}") from None


def matches(module_name: str, target: str) -> bool:
    """peft's rule for a list of names: the whole name, or its last dotted parts."""
    return module_name == target or module_name.endswith("." + target)


def check_names(model, names, field: str) -> None:
    """Every listed module name must exist: peft skips unknown ones when another one matches."""
    import torch

    if isinstance(names, str) or not names:
        return
    modules = [n for n, _ in model.named_modules() if n]
    unknown = [t for t in names if not any(matches(n, t) for n in modules)]
    if unknown:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"{field}: {', '.join(map(repr, unknown))} matches no module of this "
                          f"{model.config.model_type} model; its linear layers are named: {', '.join(linear)}")


def refuse_new_tokens(new_token_ids, what: str) -> None:
    """Only LoRA (trainable_token_indices) and full/selective train rows of tokens the template
    added; any other method would leave them at their untrained start."""
    if new_token_ids:
        raise ConfigError(f"method: {what} cannot train the rows of the {len(new_token_ids)} tokens the template adds "
                          f"to this tokenizer; use a template the tokenizer already knows (data.template), or "
                          f"method lora/full")


def architecture_mismatch(model, peft_cfg) -> str | None:
    """How the adapter's base differs from `model` (task type; model_type when the base is local)."""
    from tunewright.models.load import HEADS, peft_task_type

    want = peft_task_type(model)
    task = str(getattr(peft_cfg, "task_type", "") or "")
    if task in {peft_type for _, peft_type in HEADS.values()} and task != want:
        return f"it adapts a {task} model, this is a {want} model"
    base = getattr(peft_cfg, "base_model_name_or_path", None)
    config_file = Path(base) / "config.json" if base else None
    if config_file is not None and config_file.is_file():
        theirs = json.loads(config_file.read_text(encoding="utf-8"))
        for key in ("model_type", "hidden_size", "num_hidden_layers"):
            if key == "num_hidden_layers" and getattr(model.config, key, 0) < theirs.get(key, 0):
                continue  # the base cut to its first blocks (model.layers): the adapter's tensors are checked on loading
            if key in theirs and theirs[key] != getattr(model.config, key, theirs[key]):
                return f"its base {base!r} has {key}={theirs[key]!r}, this model has {getattr(model.config, key)!r}"
    return None


def reason(err: Exception) -> str:
    """One line of a load error: torch's 'size mismatch for <name>: ...' line when there is one."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()] or [type(err).__name__]
    return next((ln for ln in lines if "size mismatch" in ln), lines[0])


def _saved_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        return set(f.keys())


def _check_keys(model, saved: set[str], where: str, marker: str, adapter: str = "default") -> None:
    """The saved adapter and the wrapped model must hold the same adapter tensors: peft only warns
    when a layer is missing on either side (e.g. an adapter trained on a deeper model). `marker`
    names the method's own tensors (`lora_`), which must all be there."""
    from peft.utils import get_peft_model_state_dict

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*save_embedding_layers.*")  # said once, at save time
        expected = set(get_peft_model_state_dict(model, adapter_name=adapter).keys())
    extra = sorted(saved - expected)
    missing = sorted(k for k in expected - saved if marker in k)
    if extra or missing:
        what = f"unexpected tensors {extra[:3]}" if extra else f"missing tensors {missing[:3]}"
        raise ConfigError(f"{where}: the adapter does not fit this model's architecture: {what}")


def load_adapter(model, path, *, peft_type: str, what: str, marker: str, trainable: bool, field: str,
                 adapter_name: str = "default"):
    """`PeftModel.from_pretrained(model, path)` (or, when `model` is a PeftModel already, its
    `load_adapter` under `adapter_name`) after checking the folder holds a `peft_type` adapter made
    for this kind of model; any mismatch is a ConfigError naming `field`."""
    from peft import PeftConfig, PeftModel

    from tunewright.models.saved import saved_format

    folder = Path(path)
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{field}: {str(path)!r} is not a PEFT adapter folder (no adapter_config.json)")
    found = saved_format(folder)
    if found != peft_type:  # another method's adapter: peft would load it as that
        raise ConfigError(f"{field}: {str(path)!r} holds an adapter of PEFT type {found or '(none given)'}, "
                          f"not {what} ({peft_type})")
    peft_cfg = PeftConfig.from_pretrained(str(folder))
    mismatch = architecture_mismatch(model, peft_cfg)
    if mismatch:
        raise ConfigError(f"{field}: {str(path)!r} was trained for a different architecture: {mismatch}")
    try:
        with quiet_peft():
            warnings.filterwarnings("ignore", message=".*missing adapter keys.*")  # checked below, as an error
            if isinstance(model, PeftModel):
                model.load_adapter(str(folder), adapter_name=adapter_name, is_trainable=trainable)
            else:
                model = PeftModel.from_pretrained(model, str(folder), adapter_name=adapter_name,
                                                  is_trainable=trainable)
    except (ValueError, RuntimeError, KeyError) as err:
        raise ConfigError(f"{field}: {str(path)!r} does not fit this model: {reason(err)}") from None
    _check_keys(model, _saved_keys(folder), f"{field}: {str(path)!r}", marker, adapter_name)
    return model


def save(model, path) -> None:
    """Write the adapter in PEFT format: adapter_config.json + adapter_model.safetensors."""
    model.save_pretrained(str(path))


def load(model, path, *, what: str, marker: str) -> None:
    """Load adapter weights saved by `save` into a model wrapped the same way (resume)."""
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    folder = Path(path)
    if not (folder / "adapter_model.safetensors").is_file():
        raise ConfigError(f"{path}: no adapter_model.safetensors (was it saved by a {what} run?)")
    _check_keys(model, _saved_keys(folder), str(path), marker)
    state = load_peft_weights(str(folder), device=str(next(model.parameters()).device))
    try:
        set_peft_model_state_dict(model, state)
    except RuntimeError as err:  # shapes differ: saved with another size or on another model
        raise ConfigError(f"{path}: the adapter does not fit this model: {reason(err)}") from None
