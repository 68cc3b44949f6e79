"""Loading models and tokenizers: a local folder or a hub id, offline first, remote code refused.

    load_tokenizer(cfg)          AutoTokenizer, with a pad token (EOS when the model has none)
    model_head(cfg)              the head the architecture generates with ("causal_lm" | "seq2seq")
    load_model(cfg, head, settings)  the auto class of that head (HEADS): dtype, attention kernel,
                                 activation checkpointing; `settings` set on the model's config first
                                 (a classification head's num_labels, id2label, pad token id; the
                                 block count of model.layers: `layer_settings`)
    resize_embeddings(...)       grow the vocabulary; new rows start at the mean of the old ones
(Loading what a run trained, for generation or merging, is models/trained.py's.)

Everything user-caused (a missing folder, the hub offline, code that would have to run) stops
with a one-line `ConfigError`, never a traceback.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tunewright.errors import ConfigError
from tunewright.sections import Section

__all__ = [
    "ModelConfig", "HEADS", "DTYPES", "read_model_config", "load_tokenizer", "model_head", "natural_head", "head_of",
    "peft_task_type", "auto_class", "load_model", "layer_settings",
    "enable_checkpointing", "is_checkpointing", "ensure_input_grads", "resize_embeddings", "base_model",
    "read_json", "QuantizationConfig", "quantization_config", "is_quantized", "dequantize",
]


class QuantizationConfig(Section):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description=(
        "4-bit data type: nf4 (NormalFloat, QLoRA's: levels at normal quantiles) or fp4."))
    double_quant: bool = Field(True, description=(
        "Quantize the per-block absmax scales too (8 bits per 64-weight block instead of 32): QLoRA's double quantization."))
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "Dtype the dequantized weights are multiplied in: auto is bfloat16 on CUDA (the course's QLoRA) and "
        "float32 on CPU (bf16 is emulated, and slower, on CPUs without AMX/AVX512-BF16)."))


class ModelConfig(Section):
    name: str = Field("smollm2-135m-instruct", description="Local model folder or hub id.")
    tokenizer: str | None = Field(None, description="Tokenizer folder or hub id; default: the model's.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype the weights are loaded in. `auto` keeps the checkpoint's.")
    attn_implementation: str | None = Field(
        "sdpa", description="Attention kernel passed to transformers: sdpa, eager, flash_attention_2, ...")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    checkpoint_layers: float = Field(1.0, gt=0, le=1, description=(
        "With gradient_checkpointing: the fraction of transformer blocks recomputed, evenly spaced (0.5 = "
        "every other block); the others keep their activations: faster backward, more memory."))
    compile: bool = Field(False, description=(
        "torch.compile each transformer block in place (regional: one block's compile, reused by the others). "
        "The first steps are slower while it compiles (seconds; up to a minute on a cold cache); needs a C compiler on CPU."))
    liger: bool = Field(False, description=(
        "Liger kernels for RMSNorm, RoPE and SwiGLU (llama, qwen2, mistral, gemma, ...): less memory, faster. "
        "Needs `pip install liger-kernel` and a CUDA GPU."))
    activation_offload: bool = Field(False, description=(
        "Keep the activations saved for backward in pinned CPU memory (CUDA only; slower steps). With "
        "gradient_checkpointing only block inputs are saved: offloaded activation checkpointing."))
    layers: int | None = Field(None, gt=0, description=(
        "Keep only the first k transformer blocks (the others are not loaded): a smaller, faster model that starts "
        "from the full one's weights, e.g. a distillation student of the default model's first 15 of 30 blocks. "
        "The saved config says k blocks. Decoder-only and encoder models."))
    trust_remote_code: bool = Field(False, description="Run code shipped with a hub model. Off: it executes arbitrary code.")
    load_in_8bit: bool = Field(False, description=(
        "Load the frozen base's linear layers in 8 bits (bitsandbytes LLM.int8; CPU and CUDA); train adapters on it."))
    load_in_4bit: bool = Field(False, description=(
        "Load the frozen base's linear layers in 4 bits (bitsandbytes NF4/FP4; CPU and CUDA): with method.name: "
        "lora this is QLoRA. model.quantization sets the data type, double quantization and compute dtype."))
    quantization: QuantizationConfig | None = Field(None, description=(
        "With load_in_4bit: quant_type (nf4 | fp4), double_quant, compute_dtype."))

    @model_validator(mode="after")
    def _quantized(self):
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("model.load_in_4bit and model.load_in_8bit: choose one")
        if self.quantization is not None and not self.load_in_4bit:
            raise ValueError("model.quantization applies to 4-bit loading; set model.load_in_4bit: true too, or "
                             "remove quantization")
        return self

    @model_validator(mode="after")
    def _checkpoint_layers(self):
        if self.checkpoint_layers < 1 and not self.gradient_checkpointing:
            raise ValueError(f"model.checkpoint_layers: {self.checkpoint_layers} has no effect without "
                             f"model.gradient_checkpointing: true; set that too, or remove checkpoint_layers")
        return self


# A model head: what the network ends in, which an objective asks for (`objectives/*.HEAD`) ->
# (the transformers auto class that builds it, the peft task type of adapters on it). A new head
# (sequence classification, a value head) is one line here.
HEADS = {"causal_lm": ("AutoModelForCausalLM", "CAUSAL_LM"),
         "seq2seq": ("AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM"),
         "sequence_classification": ("AutoModelForSequenceClassification", "SEQ_CLS"),
         "embedding": ("AutoModel", "FEATURE_EXTRACTION")}  # the bare network: last hidden states
# model.dtype -> torch dtype name ("auto" keeps the checkpoint's)
DTYPES = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _resolve_alias(name: str) -> str:
    """`tiny-llama` and the other built-in aliases (models/aliases.py) -> their local folder."""
    from tunewright.models.aliases import resolve_model_name
    return resolve_model_name(name)


def _offline() -> bool:
    from huggingface_hub.constants import is_offline_mode

    return is_offline_mode()


def _missing(name: str, field: str, err: Exception | None = None) -> ConfigError:
    """The error for a name that is neither a local folder nor reachable on the hub."""
    if _offline():
        return ConfigError(f"{field}: {name!r} is not a local folder and the hub is offline "
                           f"(HF_HUB_OFFLINE=1; it is not in the local hub cache either)")
    return ConfigError(f"{field}: {name!r} is not a local folder and could not be loaded from the hub: "
                       f"{_first_line(err) if err else 'not found'}")


def read_model_config(name: str, *, trust_remote_code: bool = False, revision: str | None = None,
                      field: str = "model.name"):
    """The transformers config of a model folder, hub id or config.json file, without running code.

    A config with an `auto_map` whose `model_type` transformers does not know needs the model's own
    Python code: refused unless `trust_remote_code`. With a known `model_type` transformers' built-in
    implementation is used (what transformers itself does), with a warning saying so.
    """
    from transformers import CONFIG_MAPPING, AutoConfig, PreTrainedConfig

    name = _resolve_alias(name)
    path = Path(name)
    if path.is_file() and path.suffix == ".json":
        raw = read_json(path, field)
    else:
        if path.is_dir() and not (path / "config.json").is_file():
            if (path / "adapter_config.json").is_file():
                raise ConfigError(f"{field}: {name!r} is a PEFT adapter, not a model; use method.init_from "
                                  f"to train on from it, or `tunewright merge` to fold it into its base")
            raise ConfigError(f"{field}: {name!r} is a folder without config.json")
        try:
            raw, _ = PreTrainedConfig.get_config_dict(name, revision=revision)
        except OSError as err:
            raise _missing(name, field, err) from None

    model_type = raw.get("model_type")
    if raw.get("auto_map") and not trust_remote_code:
        if model_type not in CONFIG_MAPPING:
            raise ConfigError(f"{field}: {name!r} needs its own model code (auto_map in config.json, model_type "
                              f"{model_type!r} unknown to transformers); set model.trust_remote_code: true to run "
                              f"it, only if you trust its source")
        warnings.warn(f"{name}: config.json ships custom code (auto_map); using transformers' built-in "
                      f"{model_type!r} implementation instead (set model.trust_remote_code: true to run the "
                      f"shipped code)", stacklevel=2)
    if model_type is None and not raw.get("auto_map"):
        raise ConfigError(f"{field}: {name!r}: config.json has no model_type")
    try:
        if path.is_file():  # a bare config.json: build the config class its model_type names
            raw = dict(raw)
            return AutoConfig.for_model(raw.pop("model_type"), **raw)
        return AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError) as err:
        raise ConfigError(f"{field}: {name!r}: {_first_line(err)}") from None


def read_json(path: Path, field: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{field}: {path}: not a readable JSON file ({_first_line(err)})") from None


def load_tokenizer(cfg):
    """`AutoTokenizer` for `cfg.tokenizer or cfg.name` (a `ModelConfig`).

    A tokenizer without a pad token gets EOS as pad (no new embedding row): batches are padded and
    the padding masked by the attention mask and label -100, never recognised by its id.
    """
    from transformers import AutoTokenizer

    name = _resolve_alias(cfg.tokenizer or cfg.name)
    field = "model.tokenizer" if cfg.tokenizer else "model.name"
    if Path(name).is_dir() and not any((Path(name) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json",
                                                                         "tokenizer.model", "vocab.json")):
        raise ConfigError(f"{field}: {name!r} holds no tokenizer (no tokenizer.json or tokenizer_config.json)")
    try:
        tok = AutoTokenizer.from_pretrained(name, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except OSError as err:
        raise _missing(name, field, err) from None
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ConfigError(f"{field}: {name!r} needs its own tokenizer code; set model.trust_remote_code: true "
                              f"to run it, only if you trust its source") from None
        raise ConfigError(f"{field}: {name!r}: {_first_line(err)}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def natural_head(hf_config) -> str:
    """The head an architecture generates with: "seq2seq" for encoder-decoder configs (T5, BART),
    else "causal_lm" (what `objective.name: auto` trains)."""
    return "seq2seq" if getattr(hf_config, "is_encoder_decoder", False) else "causal_lm"


def model_head(cfg) -> str:
    """`natural_head` of the model a `ModelConfig` names (reads config.json only)."""
    return natural_head(read_model_config(cfg.name, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision))


def head_of(model) -> str:
    """The head of a loaded transformers model, from its class (looking through a PEFT wrapper)."""
    from transformers.models.auto import modeling_auto

    cls = type(base_model(model)).__name__
    mappings = {"causal_lm": modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                "seq2seq": modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
                "sequence_classification": modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
                "embedding": modeling_auto.MODEL_MAPPING_NAMES}
    for head, names in mappings.items():
        if cls in names.values():
            return head
    return natural_head(base_model(model).config)


def peft_task_type(model) -> str:
    """The peft task type for adapters on `model` (it picks the PeftModel wrapper class)."""
    return HEADS[head_of(model)][1]


def auto_class(head: str):
    """The transformers auto class that builds a model with `head`."""
    import transformers

    if head not in HEADS:
        raise ConfigError(f"model head {head!r}: expected one of {', '.join(HEADS)}")
    return getattr(transformers, HEADS[head][0])


def layer_settings(cfg) -> dict:
    """Config keys that cut the model a `ModelConfig` names to its first `cfg.layers` blocks ({} when
    unset): transformers then builds k blocks and loads only their weights (the later blocks' weights
    are left unread). A per-block list (layer_types: sliding or full attention) is cut alike."""
    if cfg.layers is None:
        return {}
    hf_config = read_model_config(cfg.name, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    total = getattr(hf_config, "num_hidden_layers", None)
    if getattr(hf_config, "is_encoder_decoder", False) or not isinstance(total, int):
        raise ConfigError(f"model.layers: {cfg.name!r} ({hf_config.model_type}) is not a single stack of blocks; "
                          f"layers applies to decoder-only and encoder models")
    if cfg.layers > total:
        raise ConfigError(f"model.layers: {cfg.layers}, but {cfg.name!r} has {total} blocks")
    settings: dict = {"num_hidden_layers": cfg.layers}
    if isinstance(getattr(hf_config, "layer_types", None), list):
        settings["layer_types"] = hf_config.layer_types[:cfg.layers]
    return settings


def load_model(cfg, head: str | None = None, settings: dict | None = None):
    """Load the model a `ModelConfig` names, with `head` (an objective's; default the architecture's
    own), in its dtype, with its attention kernel. `settings` are set on the transformers config
    before the weights load (an objective's `model_config`: a classifier's labels), so they size the
    new head and are saved with the model's config.json.

    `cfg.gradient_checkpointing` switches activation checkpointing on (recompute each block in
    backward: activations of one block instead of all).
    """
    name = _resolve_alias(cfg.name)
    hf_config = read_model_config(name, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    head = head or natural_head(hf_config)
    settings = {**layer_settings(cfg), **(settings or {})}
    # the pad id may name a token the caller adds next (growing the embeddings); Llama's embedding
    # refuses a padding index outside its table, so it is set once the weights are loaded
    pad_id = settings.pop("pad_token_id", None)
    for key, value in settings.items():
        setattr(hf_config, key, value)
    cls = auto_class(head)
    kwargs = dict(config=hf_config, dtype=DTYPES[cfg.dtype], revision=cfg.revision,
                  trust_remote_code=cfg.trust_remote_code)
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    quantization = quantization_config(cfg)
    if quantization is not None:
        import torch
        kwargs["quantization_config"] = quantization
        # bitsandbytes' quantized layers cannot be moved once quantized: they are built on the device
        kwargs["device_map"] = {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"
    try:
        with _quiet_loading() if cfg.layers else nullcontext():
            model = cls.from_pretrained(name, **kwargs)
    except OSError as err:
        raise _missing(name, "model.name", err) from None
    except ValueError as err:
        text = str(err)
        if "Unrecognized configuration class" in text:
            raise ConfigError(f"model.name: {cfg.name!r} ({hf_config.model_type}) has no {head} head "
                              f"(transformers has no {HEADS[head][0]} for it)") from None
        if "attn" in text.lower() or "attention" in text.lower():
            raise ConfigError(f"model.attn_implementation: {cfg.attn_implementation!r}: {_first_line(err)}") from None
        raise
    if pad_id is not None:
        model.config.pad_token_id = pad_id
    if quantization is not None:
        _prepare_kbit(model)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    return model


def quantization_config(cfg):
    """transformers' `BitsAndBytesConfig` for a `ModelConfig` with load_in_4bit/8bit, else None."""
    if not (cfg.load_in_4bit or cfg.load_in_8bit):
        return None
    import torch
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401  (transformers' own message names no version)
    except ImportError:
        raise ConfigError("model.load_in_4bit/load_in_8bit: needs bitsandbytes (pip install 'tunewright[quant]')") from None
    if cfg.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    q = cfg.quantization or QuantizationConfig()
    compute = q.compute_dtype
    if compute == "auto":
        compute = "bfloat16" if torch.cuda.is_available() else "float32"
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                              bnb_4bit_use_double_quant=q.double_quant, bnb_4bit_compute_dtype=getattr(torch, compute))


def _prepare_kbit(model) -> None:
    """What QLoRA does to a quantized base before training (peft's `prepare_model_for_kbit_training`):
    every parameter frozen, the unquantized ones in 16 bits (norms, embeddings) cast to fp32 for a stable
    backward, and the input embeddings' output made to require grad so adapters inside frozen blocks get
    gradients. Checkpointing is left to `enable_checkpointing` (our non-reentrant switch)."""
    from peft import prepare_model_for_kbit_training

    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    ensure_input_grads(model)


def is_quantized(model) -> bool:
    """Whether `model` (or the base under its wrappers) was loaded in 4 or 8 bits."""
    return getattr(base_model(model), "quantization_method", None) is not None \
        or bool(getattr(base_model(model), "is_quantized", False))


def dequantize(model):
    """The quantized base as a plain model whose weights are the dequantized ones (the weights the
    adapter was trained against), in the compute dtype; merging folds an adapter into these."""
    if not is_quantized(model):
        return model
    return base_model(model).dequantize()


@contextmanager
def _quiet_loading():
    """transformers' loading report off: with model.layers the later blocks' weights are left unread
    on purpose, and it would list each of them as unexpected."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def base_model(model):
    """The transformers model under a DDP/FSDP wrapper (`.module`) and a PEFT wrapper."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def enable_checkpointing(model) -> None:
    """Switch activation checkpointing on, under either transformers name.

    transformers 5.23 renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable`
    (the old name warns); 5.17 has only the old one. Non-reentrant checkpointing lets gradients
    reach adapters inside frozen blocks; input grads are enabled too for the reentrant variant.
    """
    if hasattr(model, "activation_checkpointing_enable"):
        enable, key = model.activation_checkpointing_enable, "activation_checkpointing_kwargs"
    else:
        enable, key = model.gradient_checkpointing_enable, "gradient_checkpointing_kwargs"
    try:
        enable(**{key: {"use_reentrant": False}})
    except ValueError as err:
        raise ConfigError(f"model.gradient_checkpointing: {_first_line(err)}") from None
    # the KV cache is useless in training and transformers refuses it alongside recomputation
    model.config.use_cache = False
    ensure_input_grads(model)


def is_checkpointing(model) -> bool:
    """Whether activation checkpointing is on in any submodule (works under either API name)."""
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def ensure_input_grads(model) -> None:
    """Make the input embeddings' output require grad, once.

    With frozen embeddings (PEFT), checkpointed blocks would otherwise see inputs without grad and,
    in reentrant mode, drop the adapters' gradients.
    """
    if getattr(model, "_require_grads_hooks", None) or getattr(model, "_require_grads_hook", None):
        return
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()


def resize_embeddings(model, tokenizer, new_ids=()) -> list[int]:
    """Grow input and output embeddings to `len(tokenizer)`; set new rows to the mean of the old.

    `new_ids` are ids of tokens just added to the tokenizer; they may lie inside the current matrix
    (vocabularies padded to a multiple of 64 have untrained rows), so they are reset too. The
    matrix never shrinks. Mean init keeps the new tokens' logits near the average instead of
    random (Hewitt 2021, "Initializing new word embeddings"). Returns the ids whose rows were set.
    """
    import torch

    emb = model.get_input_embeddings()
    old_rows = emb.weight.shape[0]
    want = len(tokenizer)
    if want > old_rows:
        model.resize_token_embeddings(want, mean_resizing=False)
    rows = model.get_input_embeddings().weight.shape[0]
    fresh = sorted({int(i) for i in new_ids if 0 <= int(i) < rows} | set(range(old_rows, rows)))
    if not fresh:
        return []
    keep = torch.ones(old_rows, dtype=torch.bool)
    keep[[i for i in fresh if i < old_rows]] = False

    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    seen: set[int] = set()
    with torch.no_grad():
        for layer in layers:
            if layer is None or id(layer.weight) in seen:  # tied output shares the input's rows
                continue
            seen.add(id(layer.weight))
            w = layer.weight  # [vocab, hidden] for both nn.Embedding and the nn.Linear head
            w[fresh] = w[:old_rows][keep].float().mean(0).to(w.dtype)
            bias = getattr(layer, "bias", None)
            if bias is not None:
                bias[fresh] = bias[:old_rows][keep].float().mean().to(bias.dtype)
    return fresh
