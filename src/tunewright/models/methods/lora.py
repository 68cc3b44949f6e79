"""LoRA (Hu et al. 2021) through peft: W' = W + (alpha / r) * B @ A, B zero-initialised, so
training starts from the base model; rsLoRA scales by alpha / sqrt(r) (Kalajdzievski 2023); DoRA
(Liu et al. 2024) splits W into magnitude and direction. Saves a PEFT-format adapter.

        x ──┬── W (frozen) ─────────────┐
            └── A [r, in] ── B [out, r] ─┴─(+ scaled)── y        only A and B train

Tokens added to the vocabulary train through peft's `trainable_token_indices`: only their rows
of the input embedding (and of an untied output head) train, stored as a small delta.

Variants, all peft's: LoRA+ (Hayou et al. 2024) trains B at `loraplus_lr_ratio` times A's learning
rate (peft's `create_loraplus_optimizer` groups, handed to the optimizer by `param_groups`);
PiSSA (Meng et al. 2024) starts A, B from the top-r singular vectors of W and trains them over the
residual W - BA; OLoRA (Büyükakyüz 2024) from a QR decomposition. Both change the base weights,
so `save` writes peft's conversion to a plain rank-2r LoRA of the unmodified base (see
`_as_plain_lora`).
`init_from` starts a new run from an existing adapter; `load` restores one for a resume;
`load_for_inference` puts a saved one on its base for generation, evaluation or merging.
peft is imported inside functions: config.py imports this module for `Config`, and validating a
recipe should not pay for torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tunewright.errors import ConfigError
from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge", "CANNOT_MERGE", "FORMAT", "load_for_inference", "load_adapter",
           "param_groups"]

# `init_lora_weights` -> peft's value: `default` is peft's own (A Kaiming-uniform, B zero)
INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}
MUTATES_BASE = ("pissa", "olora")  # inits that subtract the adapter's start from W


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
    init_lora_weights: Literal["default", "gaussian", "pissa", "olora"] = Field("default", description=(
        "How A and B start: `default` (peft's: A Kaiming-uniform, B zero), `gaussian` (A normal), `pissa` (the "
        "top-r singular vectors of W; W keeps the residual), `olora` (a QR decomposition of W). pissa and olora "
        "change the base weights: the saved adapter is converted to a plain LoRA of rank 2r for the unmodified base."))
    layers_to_transform: list[int] | None = Field(None, description=(
        "Adapt only these block indices (0-based); default every block."))
    loraplus_lr_ratio: float | None = Field(None, gt=0, description=(
        "LoRA+: B's learning rate is this times A's (train.learning_rate); peft's parameter groups. 16 is the "
        "paper's usual value."))

    @model_validator(mode="after")
    def _init_fits(self):
        if self.init_lora_weights in MUTATES_BASE and self.use_dora:
            # the conversion to a plain LoRA for the unmodified base covers B @ A, not DoRA's magnitudes
            raise ValueError(f"init_lora_weights: {self.init_lora_weights} cannot be combined with use_dora")
        return self


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
    from peft import LoraConfig

    from tunewright.models import peft_adapters
    from tunewright.models.load import peft_task_type

    peft_adapters.check_names(model, cfg.target_modules, "method.target_modules")
    peft_adapters.check_names(model, cfg.modules_to_save, "method.modules_to_save")
    # on the meta device (counting for `inspect`) there are no values to decompose; PiSSA and OLoRA
    # have the default init's shapes
    on_meta = next(model.parameters()).is_meta
    init = INIT["default" if on_meta else cfg.init_lora_weights]
    peft_cfg = LoraConfig(
        r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules),
        use_rslora=cfg.use_rslora, use_dora=cfg.use_dora, bias=cfg.bias,
        modules_to_save=list(cfg.modules_to_save) or None,
        trainable_token_indices=_token_targets(model, new_token_ids, cfg.modules_to_save),
        task_type=peft_task_type(model), init_lora_weights=init,
        layers_to_transform=list(cfg.layers_to_transform) if cfg.layers_to_transform is not None else None,
    )
    _check_layers(model, cfg.layers_to_transform)
    model = peft_adapters.wrap(model, peft_cfg, "LoRA")
    if cfg.init_lora_weights in MUTATES_BASE and not on_meta:
        # A0, B0 as initialised: `save` needs them to express the trained adapter against the
        # unmodified base (a plain attribute: neither a parameter nor in the state dict)
        model._tunewright_initial_lora = {k: v.detach().clone() for k, v in _adapter_state(model).items()}
    return model


def _check_layers(model, layers) -> None:
    """Indices must exist: peft adapts nothing for an index past the last block and says nothing."""
    from tunewright.models.methods.selective import find_blocks

    if not layers:
        return
    where, blocks = find_blocks(model)
    wrong = sorted(i for i in layers if not 0 <= i < len(blocks))
    if wrong:
        raise ConfigError(f"method.layers_to_transform: {wrong} out of range; {where} has blocks 0-{len(blocks) - 1}")


def _token_targets(model, new_token_ids, modules_to_save) -> dict[str, list[int]] | None:
    """peft `trainable_token_indices`: {embedding module name: ids} for the input embedding, and
    for the output head when it is not tied to it (a tied head follows the input's delta)."""
    from tunewright.models.peft_adapters import matches

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
    targets = {n: v for n, v in targets.items() if not any(matches(n, m) for m in modules_to_save)}
    return targets or None


def _check_same_settings(peft_cfg, cfg: Config) -> None:
    """With init_from the adapter's own settings govern; a key the user set that disagrees is an error."""
    # loraplus_lr_ratio is the optimizer's, not the adapter's: any value goes with any adapter
    for key in sorted(cfg.model_fields_set - {"name", "init_from", "loraplus_lr_ratio"}):
        ours, theirs = getattr(cfg, key), getattr(peft_cfg, key, None)
        if key == "target_modules" and not isinstance(ours, str):
            ours, theirs = set(ours), set(theirs or ())
        if key == "modules_to_save":
            ours, theirs = set(ours), set(theirs or ())
        if key == "init_lora_weights":
            ours = INIT[ours]
        if key == "layers_to_transform":
            ours, theirs = list(ours or []), list(theirs if isinstance(theirs, list) else [] if theirs is None else [theirs])
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



def param_groups(model, cfg: Config, train_cfg) -> list[dict] | None:
    """LoRA+: peft's `create_loraplus_optimizer` grouping (A at the learning rate, B and 1-D adapter
    tensors at `loraplus_lr_ratio` times it, LoRA embeddings at 1e-6), each group split again so
    1-D tensors take no weight decay, as everywhere else. None without LoRA+: the default groups."""
    from peft.optimizers import create_loraplus_optimizer

    if cfg.loraplus_lr_ratio is None:
        return None
    # peft builds the optimizer itself; a stand-in class hands back its groups instead
    groups = create_loraplus_optimizer(model, lambda grouped, **kw: grouped, lr=train_cfg.learning_rate,
                                       loraplus_lr_ratio=cfg.loraplus_lr_ratio)
    out = []
    for group in groups:
        for decays in (True, False):
            params = [p for p in group["params"] if (p.ndim >= 2) == decays]
            if params:
                out.append({"params": params, "lr": group["lr"],
                            "weight_decay": train_cfg.weight_decay if decays else 0.0})
    return out


# ---------------------------------------------------------------- adapters on disk

FORMAT = "LORA"  # the peft_type of adapter_config.json (DoRA is LORA with use_dora)
CANNOT_MERGE = None  # merge_and_unload folds B @ A (and DoRA's magnitudes, token deltas) into W
MARKER = "lora_"  # the method's own tensors in a saved state dict


def load_adapter(model, path, *, trainable: bool, field: str, adapter_name: str = "default"):
    """The LoRA adapter at `path` on `model`, checked to be LoRA and to fit (models/peft_adapters.py)."""
    from tunewright.models import peft_adapters

    return peft_adapters.load_adapter(model, path, peft_type=FORMAT, what="LoRA", marker=MARKER,
                                      trainable=trainable, field=field, adapter_name=adapter_name)


def _adapter_state(model) -> dict:
    """The A and B tensors (peft's state-dict names, e.g. `...q_proj.lora_A.weight`)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v for k, v in get_peft_model_state_dict(model).items() if "lora_A" in k or "lora_B" in k}


def save(model, path) -> None:
    """Write the adapter in PEFT format: adapter_config.json + adapter_model.safetensors; a PiSSA or
    OLoRA adapter as the plain LoRA it amounts to on the unmodified base."""
    from tunewright.models import peft_adapters

    if getattr(model, "_tunewright_initial_lora", None) is None:
        peft_adapters.save(model, path)
    else:
        _as_plain_lora(model, path)


def _as_plain_lora(model, path) -> None:
    """peft's PiSSA/OLoRA conversion (`LoraModel.subtract_mutated_init`): with W = W_res + s B0 A0
    at the start and W_res + s B A after training, the change is

        dW = s (B A - B0 A0) = s [B | -B0] [A ; A0]          a LoRA of rank 2r on the original W

    saved with r and lora_alpha doubled (the same s; sqrt(2) alpha under rsLoRA), as
    `save_pretrained(path_initial_model_for_weight_conversion=...)` writes it. Done here from the
    A0, B0 kept at `apply`: peft's route loads the initial adapter as a second adapter mid-save,
    whose new layers draw from the RNG and would break a bit-exact resume."""
    import copy

    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    initial = model._tunewright_initial_lora
    state = {}
    for key, value in get_peft_model_state_dict(model).items():
        if key not in initial:  # modules_to_save, token deltas, biases: base-independent, as they are
            state[key] = value.contiguous()
        elif "lora_A" in key:
            state[key] = torch.cat([value, initial[key]], dim=0).contiguous()
        else:
            state[key] = torch.cat([value, -initial[key]], dim=1).contiguous()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    peft_cfg = copy.deepcopy(model.peft_config["default"])
    peft_cfg.init_lora_weights = True
    peft_cfg.r *= 2
    peft_cfg.lora_alpha *= 2 ** 0.5 if peft_cfg.use_rslora else 2
    if peft_cfg.base_model_name_or_path is None:
        peft_cfg.base_model_name_or_path = model.get_base_model().name_or_path or None
    peft_cfg.inference_mode = True
    peft_cfg.save_pretrained(str(path))


def load(model, path) -> None:
    """Load adapter weights saved by `save` into a model prepared by `apply` (resume). A converted
    PiSSA/OLoRA adapter holds [A ; A0] and [B | -B0]: the first r rows and columns are the trained
    factors, and the rest must be this model's own start (the same base and init)."""
    from tunewright.models import peft_adapters

    initial = getattr(model, "_tunewright_initial_lora", None)
    if initial is None:
        peft_adapters.load(model, path, what="LoRA", marker=MARKER)
        return
    _load_converted(model, Path(path), initial)


def _load_converted(model, folder: Path, initial: dict) -> None:
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    if not (folder / "adapter_model.safetensors").is_file():
        raise ConfigError(f"{folder}: no adapter_model.safetensors (was it saved by a LoRA run?)")
    saved = load_peft_weights(str(folder), device=str(next(model.parameters()).device))
    state = dict(saved)
    for key, start in initial.items():
        if key not in saved:
            raise ConfigError(f"{folder}: the adapter does not fit this model: missing tensor {key!r}")
        value = saved[key]
        r = start.shape[0] if "lora_A" in key else start.shape[1]
        trained, rest = (value[:r], value[r:]) if "lora_A" in key else (value[:, :r], -value[:, r:])
        if rest.shape != start.shape or not bool((rest == start).all()):
            raise ConfigError(f"{folder}: {key} was not converted from this model's own PiSSA/OLoRA start "
                              f"(another base or rank?)")
        state[key] = trained
    set_peft_model_state_dict(model, state)


def merge(model):
    """Fold the adapters (and token deltas) into the base weights -> a plain transformers model."""
    return model.merge_and_unload()


def load_for_inference(model, path, adapter_name: str = "default"):
    """The adapter at `path` on the base `model`, frozen, checked to fit it (see `load_adapter`)."""
    return load_adapter(model, path, trainable=False, field="adapter", adapter_name=adapter_name)
