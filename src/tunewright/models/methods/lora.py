"""LoRA (Hu et al. 2021) through peft: W' = W + (alpha / r) * B @ A, B zero-initialised, so
training starts from the base model; rsLoRA scales by alpha / sqrt(r) (Kalajdzievski 2023); DoRA
(Liu et al. 2024) splits W into magnitude and direction. Saves a PEFT-format adapter.

        x ──┬── W (frozen) ─────────────┐
            └── A [r, in] ── B [out, r] ─┴─(+ scaled)── y        only A and B train

Tokens added to the vocabulary train through peft's `trainable_token_indices`: only their rows
of the input embedding (and of an untied output head) train, stored as a small delta.
`init_from` starts a new run from an existing adapter; `load` restores one for a resume;
`load_for_inference` puts a saved one on its base for generation, evaluation or merging.
peft is imported inside functions: config.py imports this module for `Config`, and validating a
recipe should not pay for torch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field

from tunewright.errors import ConfigError
from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge", "CANNOT_MERGE", "FORMAT", "load_for_inference", "load_adapter"]


class Config(Section):
    name: Literal["lora"] = Field("lora", description="Low-rank adapters through peft.")
    r: int = Field(8, gt=0, description="Rank of the update B @ A.")
    lora_alpha: float = Field(16, gt=0, description="Scale numerator: the update is multiplied by alpha / r.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "v_proj"], description="Module names to adapt, or `all-linear`.")
    use_rslora: bool = Field(False, description="Scale by alpha / sqrt(r) (rank-stabilised LoRA).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train with the adapter.")
    modules_to_save: list[str] = Field(default_factory=list, description="Modules trained and saved in full (e.g. lm_head).")
    init_from: str | None = Field(None, description="Start from an existing adapter folder (a new run, not a resume).")


def apply(model, cfg: Config, *, new_token_ids=()):
    """Wrap `model` in a `PeftModel` whose only trainable parameters are the adapters (plus
    `modules_to_save`, selected biases and the rows of `new_token_ids`)."""
    from tunewright.models.load import ensure_input_grads, is_checkpointing

    if cfg.init_from:
        model = load_adapter(model, cfg.init_from, trainable=True, field="method.init_from")
        _check_same_settings(model.peft_config["default"], cfg)
        _check_tokens_covered(model.peft_config["default"], new_token_ids, cfg.init_from)
    else:
        model = _wrap(model, cfg, new_token_ids)
    base = model.get_base_model()
    if is_checkpointing(base):
        ensure_input_grads(base)
    return model


def _wrap(model, cfg: Config, new_token_ids):
    from peft import LoraConfig, get_peft_model

    from tunewright.models.load import peft_task_type

    _check_names(model, cfg.target_modules, "method.target_modules")
    _check_names(model, cfg.modules_to_save, "method.modules_to_save")
    peft_cfg = LoraConfig(
        r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules),
        use_rslora=cfg.use_rslora, use_dora=cfg.use_dora, bias=cfg.bias,
        modules_to_save=list(cfg.modules_to_save) or None,
        trainable_token_indices=_token_targets(model, new_token_ids, cfg.modules_to_save),
        task_type=peft_task_type(model),
    )
    try:
        with warnings.catch_warnings():
            # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`: noise, not news
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, peft_cfg)
    except ValueError as err:
        raise ConfigError(f"method: peft refused the LoRA config: {str(err).strip().splitlines()[0]}") from None


def _matches(module_name: str, target: str) -> bool:
    # peft's rule for a list of names: the whole name, or its last dotted parts
    return module_name == target or module_name.endswith("." + target)


def _check_names(model, names, field: str) -> None:
    """Every listed module name must exist: peft skips unknown ones when another one matches."""
    import torch

    if isinstance(names, str) or not names:
        return
    modules = [n for n, _ in model.named_modules() if n]
    unknown = [t for t in names if not any(_matches(n, t) for n in modules)]
    if unknown:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"{field}: {', '.join(map(repr, unknown))} matches no module of this "
                          f"{model.config.model_type} model; its linear layers are named: {', '.join(linear)}")


def _token_targets(model, new_token_ids, modules_to_save) -> dict[str, list[int]] | None:
    """peft `trainable_token_indices`: {embedding module name: ids} for the input embedding, and
    for the output head when it is not tied to it (a tied head follows the input's delta)."""
    ids = sorted({int(i) for i in new_token_ids})
    if not ids:
        return None
    names = {id(m): n for n, m in model.named_modules()}
    emb_in, emb_out = model.get_input_embeddings(), model.get_output_embeddings()
    layers = [emb_in]
    if emb_out is not None and emb_out.weight is not emb_in.weight:
        layers.append(emb_out)
    targets = {names[id(layer)]: ids for layer in layers}
    # an embedding in modules_to_save trains whole already; peft refuses both on one module
    targets = {n: v for n, v in targets.items() if not any(_matches(n, m) for m in modules_to_save)}
    return targets or None


def _check_same_settings(peft_cfg, cfg: Config) -> None:
    """With init_from the adapter's own settings govern; a key the user set that disagrees is an error."""
    for key in sorted(cfg.model_fields_set - {"name", "init_from"}):
        ours, theirs = getattr(cfg, key), getattr(peft_cfg, key, None)
        if key == "target_modules" and not isinstance(ours, str):
            ours, theirs = set(ours), set(theirs or ())
        if key == "modules_to_save":
            ours, theirs = set(ours), set(theirs or ())
        if ours != theirs:
            raise ConfigError(f"method.{key}: {getattr(cfg, key)!r} differs from the adapter at method.init_from "
                              f"({theirs!r}); remove the key (the adapter's settings are used) or match it")


def _check_tokens_covered(peft_cfg, new_token_ids, path) -> None:
    if not new_token_ids:
        return
    held = peft_cfg.trainable_token_indices or []
    covered = set(held) if isinstance(held, list) else set().union(*map(set, held.values()))
    missing = sorted({int(i) for i in new_token_ids} - covered)
    if missing:
        raise ConfigError(f"method.init_from: the adapter at {path!r} does not train the newly added token ids "
                          f"{missing}; start a new adapter or add the tokens before training it")


# ---------------------------------------------------------------- adapters on disk

FORMAT = "LORA"  # the peft_type of adapter_config.json (DoRA is LORA with use_dora)
CANNOT_MERGE = None  # merge_and_unload folds B @ A (and DoRA's magnitudes, token deltas) into W


def _architecture_mismatch(model, peft_cfg) -> str | None:
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
            if key in theirs and theirs[key] != getattr(model.config, key, theirs[key]):
                return f"its base {base!r} has {key}={theirs[key]!r}, this model has {getattr(model.config, key)!r}"
    return None


def _reason(err: Exception) -> str:
    """One line of a load error: torch's 'size mismatch for <name>: ...' line when there is one."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()] or [type(err).__name__]
    return next((ln for ln in lines if "size mismatch" in ln), lines[0])


def _saved_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        return set(f.keys())


def _check_keys(model, saved: set[str], where: str) -> None:
    """The saved adapter and the wrapped model must hold the same adapter tensors: peft only warns
    when a layer is missing on either side (e.g. an adapter trained on a deeper model)."""
    from peft.utils import get_peft_model_state_dict

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*save_embedding_layers.*")  # said once, at save time
        expected = set(get_peft_model_state_dict(model).keys())
    extra = sorted(saved - expected)
    missing = sorted(k for k in expected - saved if "lora_" in k)
    if extra or missing:
        what = f"unexpected tensors {extra[:3]}" if extra else f"missing tensors {missing[:3]}"
        raise ConfigError(f"{where}: the adapter does not fit this model's architecture: {what}")


def load_adapter(model, path, *, trainable: bool, field: str):
    """`PeftModel.from_pretrained(model, path)` after checking the adapter was made for this kind
    of model; any mismatch is a ConfigError naming `field`."""
    from peft import PeftConfig, PeftModel

    from tunewright.models.saved import saved_format

    folder = Path(path)
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{field}: {str(path)!r} is not a PEFT adapter folder (no adapter_config.json)")
    found = saved_format(folder)
    if found != FORMAT:  # another method's adapter (IA3, prompt tuning, ...): peft would load it as that
        raise ConfigError(f"{field}: {str(path)!r} holds an adapter of PEFT type {found or '(none given)'}, "
                          f"not LoRA ({FORMAT})")
    peft_cfg = PeftConfig.from_pretrained(str(folder))
    mismatch = _architecture_mismatch(model, peft_cfg)
    if mismatch:
        raise ConfigError(f"{field}: {str(path)!r} was trained for a different architecture: {mismatch}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*missing adapter keys.*")  # checked below, as an error
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)
    except (ValueError, RuntimeError, KeyError) as err:
        raise ConfigError(f"{field}: {str(path)!r} does not fit this model: {_reason(err)}") from None
    _check_keys(model, _saved_keys(folder), f"{field}: {str(path)!r}")
    return model


def save(model, path) -> None:
    """Write the adapter in PEFT format: adapter_config.json + adapter_model.safetensors."""
    model.save_pretrained(str(path))


def load(model, path) -> None:
    """Load adapter weights saved by `save` into a model prepared by `apply` (resume)."""
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    folder = Path(path)
    if not (folder / "adapter_model.safetensors").is_file():
        raise ConfigError(f"{path}: no adapter_model.safetensors (was it saved by a LoRA run?)")
    _check_keys(model, _saved_keys(folder), str(path))
    state = load_peft_weights(str(folder), device=str(next(model.parameters()).device))
    try:
        set_peft_model_state_dict(model, state)
    except RuntimeError as err:  # shapes differ: saved with another r or on another model size
        raise ConfigError(f"{path}: the adapter does not fit this model: {_reason(err)}") from None


def merge(model):
    """Fold the adapters (and token deltas) into the base weights -> a plain transformers model."""
    return model.merge_and_unload()


def load_for_inference(model, path):
    """The adapter at `path` on the base `model`, frozen, checked to fit it (see `load_adapter`)."""
    return load_adapter(model, path, trainable=False, field="adapter")
