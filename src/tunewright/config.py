"""The schema of a run: one YAML file, validated by pydantic v2, every key documented.

`load_config(path, overrides)` reads the YAML, applies `a.b=value` overrides from the command line,
and validates. Unknown keys are errors with "did you mean"; keys that a later release implements
are rejected with "not supported yet" rather than accepted and ignored.
"""

from __future__ import annotations

import copy
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from tunewright.errors import ConfigError
from tunewright.models.methods import METHOD_CONFIGS, PLANNED_METHODS
from tunewright.registry import suggest
from tunewright.sections import Section, not_supported_yet

__all__ = [
    "Section", "ModelConfig", "DataSource", "DataConfig", "ObjectiveConfig", "TrainConfig",
    "EvalConfig", "OutputConfig", "SmokeConfig", "RunConfig", "load_config", "parse_config", "apply_overrides",
    "dump_config", "yaml_value", "shown", "clipped", "error_lines", "not_a_file", "MAX_YAML_VALUES", "MAX_YAML_DEPTH",
]


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
    trust_remote_code: bool = Field(False, description="Run code shipped with a hub model. Off: it executes arbitrary code.")
    load_in_8bit: bool = Field(False, description="8-bit quantized loading (not supported yet).")
    load_in_4bit: bool = Field(False, description="4-bit quantized loading, QLoRA (not supported yet).")

    @field_validator("load_in_8bit", "load_in_4bit")
    @classmethod
    def _quantized(cls, v, info):
        return not_supported_yet(v, f"model.{info.field_name}", "quantized loading comes with the QLoRA issue")

    @model_validator(mode="after")
    def _checkpoint_layers(self):
        if self.checkpoint_layers < 1 and not self.gradient_checkpointing:
            raise ValueError(f"model.checkpoint_layers: {self.checkpoint_layers} has no effect without "
                             f"model.gradient_checkpointing: true; set that too, or remove checkpoint_layers")
        return self


class DataSource(Section):
    path: str = Field(..., description="A json/jsonl/csv/parquet file, a `datasets` saved folder, or a hub dataset name.")
    format: str = Field("alpaca", description="Row format: alpaca, messages, sharegpt, prompt_completion, text.")
    split: str = Field("train", description="Split to read from a saved folder or hub dataset.")
    subset: str | None = Field(None, description="Hub dataset configuration name.")
    file_type: Literal["auto", "json", "jsonl", "csv", "parquet"] = Field(
        "auto", description="File type; `auto` goes by the file extension.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map of our field name to the dataset's column, e.g. {instruction: question}.")
    roles: dict[str, str] = Field(
        default_factory=dict, description="Extra role names mapped to system/user/assistant (sharegpt `from` values).")
    weight: float = Field(1.0, gt=0, description="Mixture weight: 2 repeats the rows twice, 0.5 keeps a seeded half.")

    @field_validator("format")
    @classmethod
    def _known_format(cls, v):
        from tunewright.data.formats import FORMATS  # imported late: formats.py imports this module
        if v not in FORMATS:
            raise ValueError(f"unknown data format {shown(v)}{suggest(v, FORMATS.names())}; known: {', '.join(FORMATS.names())}")
        return v


class DataConfig(Section):
    datasets: list[DataSource] = Field(..., min_length=1, description="Training data sources, mixed by weight.")
    eval_datasets: list[DataSource] = Field(
        default_factory=list, description="Separate evaluation sources (instead of `val_set_size`).")
    template: str | None = Field(
        None, description="Prompt template: alpaca, chatml, llama3, a .jinja file, or null for the tokenizer's own.")
    system_prompt: str | None = Field(None, description="System message added to conversations that have none.")
    val_set_size: float = Field(0, ge=0, description="Held-out rows: a count (>= 1) or a fraction (< 1), seeded.")
    training_size: int | None = Field(None, gt=0, description="Use only the first N rows of each training source.")
    cutoff_len: int = Field(512, gt=0, description="Maximum tokens per example.")
    truncation: Literal["truncate", "drop"] = Field(
        "truncate", description="Over-long examples: `truncate` cuts the end, `drop` removes the row.")
    train_on_inputs: bool = Field(False, description="Also train on prompt tokens; false gives them label -100.")
    train_on_turns: Literal["all", "last"] = Field(
        "all", description="Which assistant turns carry loss; per-message `train` flags override.")
    add_eos_token: bool = Field(True, description="Append EOS to examples whose text does not already end with it.")
    group_by_length: bool = Field(False, description="Batch examples of similar length together (less padding).")
    packing: bool = Field(False, description="Pack several examples per row, padding-free, no cross-attention.")
    on_error: Literal["raise", "skip"] = Field("raise", description="Bad rows: stop with an error, or skip and count them.")
    max_skipped: float = Field(0.01, ge=0, description="With on_error=skip: the most rows skipped (count, or fraction < 1).")
    cache_dir: str | None = Field(None, description="Tokenization cache; default ~/.cache/tunewright/tokenized.")

    @model_validator(mode="after")
    def _eval_source(self):
        if self.eval_datasets and self.val_set_size:
            raise ValueError("give either data.eval_datasets or data.val_set_size, not both")
        if self.packing and self.group_by_length:
            raise ValueError("data.group_by_length has no effect with data.packing (packed rows are already "
                             "full); turn one off")
        weighted = [i for i, d in enumerate(self.eval_datasets) if d.weight != 1]
        if weighted:
            raise ValueError(f"data.eval_datasets.{weighted[0]}.weight: evaluation sources are not mixed; remove the weight")
        return self


class ObjectiveConfig(Section):
    name: Literal["auto", "causal_lm", "seq2seq"] = Field(
        "auto", description="Training objective; `auto` picks seq2seq for encoder-decoder models, else causal_lm.")
    chunk_size: int = Field(
        1024, gt=0, description="Rows of hidden states sent through the output projection at once (fused and chunked cross-entropy).")
    cross_entropy: Literal["fused", "chunked", "full"] = Field(
        "fused", description="How causal_lm computes the loss over target rows: `fused` computes each chunk's logits "
        "and their gradient in forward (fastest: no recompute, never full logits); `chunked` runs chunks under "
        "activation checkpointing (logits recomputed in backward); `full` projects all target rows at once, as "
        "transformers does (a reference for debugging). A PEFT-wrapped output layer (LoRA or modules_to_save on "
        "lm_head) always takes the chunked path. causal_lm only: seq2seq computes full logits.")

    @model_validator(mode="after")
    def _cross_entropy(self):
        # values are compared with the defaults, not with the keys given: the saved config.yaml writes
        # every default out and must load again
        if self.name == "seq2seq" and self.cross_entropy != "fused":
            raise ValueError(f"objective.cross_entropy: {self.cross_entropy!r} has no effect with objective seq2seq "
                             "(it computes the decoder's full logits); remove the key")
        if self.cross_entropy == "full" and self.chunk_size != ObjectiveConfig.model_fields["chunk_size"].default:
            raise ValueError("objective.chunk_size has no effect with objective.cross_entropy: full (all rows at "
                             "once); remove chunk_size or choose fused/chunked")
        return self


EVAL_METRICS = ("eval_loss", "eval_perplexity")  # what evaluation during training always produces


def _known_metric(v: str) -> str:
    # eval.metrics / eval.labels add `eval_<key>` metrics; whether a given key is produced is checked
    # at the first evaluation (the loop stops with the list of what was produced)
    if v not in EVAL_METRICS and not v.startswith("eval_"):
        raise ValueError(f"unknown metric {shown(v)}{suggest(v, EVAL_METRICS)}; evaluation produces "
                         f"{', '.join(EVAL_METRICS)} and eval_<metric> for eval.metrics / eval.labels")
    return v


class EarlyStopping(Section):
    metric: str = Field("eval_loss", description="Metric watched for early stopping and best checkpoint.")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v):
        return _known_metric(v)
    mode: Literal["min", "max"] = Field("min", description="Whether lower or higher is better.")
    patience: int = Field(3, gt=0, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")


# Epochs times steps per epoch must stay a countable number of steps (1e308 epochs overflow it).
MAX_EPOCHS = 1_000_000


class TrainConfig(Section):
    batch_size: int = Field(8, gt=0, description="Global batch size (examples per optimizer step, all devices).")
    micro_batch_size: int = Field(4, gt=0, description="Examples per forward pass per device.")
    num_epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps; overrides num_epochs.")
    learning_rate: float = Field(3e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="Decay after warmup.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Cosine floor as a fraction of the peak lr.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Warmup as a fraction of all steps (instead of warmup_steps).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay; never applied to biases and norms.")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2.")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm; null disables.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="Autocast precision for forward passes (fp16: CUDA only).")
    seed: int = Field(42, description="Seed for data order, splits, dropout and initialisation.")
    logging_steps: int = Field(1, gt=0, description="Write metrics every N optimizer steps.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Extra metric sinks besides metrics.jsonl.")
    resume: str | None = Field(None, description="`auto` (latest complete checkpoint of this run) or a checkpoint path.")
    nan_policy: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/inf loss: stop with the step and batch, or skip that batch's update.")
    max_nan_skips: int = Field(3, ge=0, description="With nan_policy: skip, stop after this many skipped batches.")

    @model_validator(mode="after")
    def _warmup(self):
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("give train.warmup_steps or train.warmup_ratio, not both")
        if self.min_lr_ratio and self.lr_scheduler != "cosine":
            raise ValueError(f"train.min_lr_ratio applies to the cosine schedule only (lr_scheduler is {self.lr_scheduler!r})")
        return self


class EvalConfig(Section):
    steps: int | None = Field(None, gt=0, description="Evaluate every N optimizer steps (and at the end).")
    at_start: bool = Field(False, description="Also evaluate before the first step.")
    micro_batch_size: int | None = Field(None, gt=0, description="Evaluation batch per device; default train.micro_batch_size.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop when the metric stops improving.")
    metrics: list[str] = Field(default_factory=list, description=(
        "Generation metrics computed on the evaluation rows at each evaluation (rouge, bleu, exact_match, ...), "
        "logged as eval_<key>, e.g. eval_rougeL."))
    labels: list[str] | None = Field(None, description=(
        "Scoring evaluation: the answer is one of these labels (e.g. [\"No\", \"Yes\"]); logs eval_accuracy, "
        "eval_macro_f1 and eval_auc (P of the last label) from the label probabilities, no generation."))
    max_new_tokens: int = Field(64, gt=0, description="Generation length for eval.metrics.")
    max_examples: int | None = Field(None, gt=0, description="Evaluate eval.metrics / eval.labels on the first N rows only.")
    best_metric: str = Field("eval_loss", description="Metric that marks the best checkpoint.")
    best_mode: Literal["min", "max"] = Field("min", description="Whether lower or higher best_metric is better.")

    @field_validator("best_metric")
    @classmethod
    def _metric(cls, v):
        return _known_metric(v)

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, v):
        from tunewright.eval.metrics import METRICS  # light: the metric libraries load when used
        unknown = [n for n in v if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {shown(unknown[0])}{suggest(unknown[0], METRICS.names())}; "
                             f"known: {', '.join(METRICS.names())}")
        return v

    @model_validator(mode="after")
    def _needs_steps(self):
        if self.early_stopping and not self.steps:
            raise ValueError("eval.early_stopping needs eval.steps (how often to evaluate)")
        if self.metrics and self.labels:
            raise ValueError("give eval.metrics (generate, then score the text) or eval.labels (score the labels), not both")
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError("eval.labels needs at least two labels")
        return self


class OutputConfig(Section):
    name: str | None = Field(None, description="Run name; the run folder is <dir>/<name>. Default: the recipe's file name.")
    dir: str = Field("runs", description="Parent folder of run folders.")
    overwrite: bool = Field(False, description="Allow starting a fresh run in a non-empty run folder (its contents are removed).")
    save_steps: int | None = Field(None, gt=0, description="Save a checkpoint every N optimizer steps (and at the end).")
    save_total_limit: int | None = Field(None, gt=0, description="Keep at most N checkpoints; the newest and the best are never deleted.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v):
        if v is not None and (not v or v in {".", ".."} or "/" in v or "\\" in v or "\0" in v):
            raise ValueError(f"run name {shown(v)} must be a plain folder name (no '/', '..')")
        if v is not None:
            _fits_filesystem(v, "run name")
        return v

    @field_validator("dir")
    @classmethod
    def _dir_parts(cls, v):
        for part in Path(v).parts:
            _fits_filesystem(part, "folder name")
        return v


NAME_MAX = 255  # bytes in one file or folder name on ext4, xfs, btrfs (APFS and NTFS: 255 characters)


def _fits_filesystem(name: str, what: str) -> None:
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > NAME_MAX:
        raise ValueError(f"{what} is {size} bytes long; a file system takes at most {NAME_MAX} bytes per name")


class SmokeConfig(Section):
    model: str = Field("tiny-llama", description="Tiny model of the recipe's architecture used by `--smoke` (tiny-llama, tiny-qwen2, tiny-gpt2, tiny-t5).")
    max_steps: int = Field(6, gt=0, description="Optimizer steps in smoke mode.")
    overrides: list[str] = Field(default_factory=list, description="Further `key=value` overrides in smoke mode.")


MethodConfig = Annotated[Union[tuple(METHOD_CONFIGS.values())], Field(discriminator="name")]


class RunConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    data: DataConfig = Field(..., description="Training and evaluation data.")
    method: MethodConfig = Field(default_factory=lambda: METHOD_CONFIGS["lora"](),
                                 description="Which parameters train, and how (full, selective, lora).")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="The loss.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimizer, schedule and loop.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation during training.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Run folder and checkpoints.")
    smoke: SmokeConfig = Field(default_factory=SmokeConfig,
                               description="What `--smoke` changes: a tiny model and a few steps, to check a recipe end to end in seconds.")

    @model_validator(mode="before")
    @classmethod
    def _default_method(cls, raw):
        # `method: {r: 16}` or an override `method.r=16` means LoRA, the default method.
        if isinstance(raw, dict) and isinstance(raw.get("method"), dict) and "name" not in raw["method"]:
            raw = {**raw, "method": {"name": "lora", **raw["method"]}}
        return raw

    @model_validator(mode="after")
    def _batches(self):
        if self.train.batch_size % self.train.micro_batch_size:
            raise ValueError(f"train.batch_size ({self.train.batch_size}) must be a multiple of "
                             f"train.micro_batch_size ({self.train.micro_batch_size})")
        if self.data.packing and self.objective.name == "seq2seq":
            # an encoder-decoder model cannot keep packed examples apart (its cross-attention sees them all)
            raise ValueError("data.packing: not possible with objective seq2seq (encoder-decoder models train "
                             "each example as its own row); turn packing off")
        return self

    def run_dir(self) -> Path:
        return Path(self.output.dir) / (self.output.name or "run")


# ---------------------------------------------------------------- loading, overrides, errors

def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` (value parsed as YAML; list items by index: `data.datasets.0.path=x`)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {shown(item)}: expected key.sub=value")
        value = yaml_value(text, f"override {key}")
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {key}: {'.'.join(parts[:i])} has no item {part}")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"override {key}: {'.'.join(parts[:i])} is not a section")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return raw


# A recipe holds a few hundred values a few levels deep. These bounds are far above that and far
# below what hurts: an alias bomb (`b: &b [*a, *a, ...]`, ten levels) expands to billions of values
# and hangs whatever walks it; 10,000 nested `[` overflow the Python stack in PyYAML's composer.
MAX_YAML_VALUES = 100_000  # values once every alias is expanded
MAX_YAML_DEPTH = 100  # nesting levels, aliases expanded


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a repeated key (plain YAML keeps the last and silently drops the
    first) and a document that is too deep or expands past MAX_YAML_VALUES through its aliases."""

    _depth = 0

    def fetch_flow_collection_start(self, TokenClass):
        # `[[[[...` is refused while scanning: PyYAML's scanner reads ahead quadratically in it
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > MAX_YAML_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.get_mark())

    def compose_node(self, parent, index):
        # the composer recurses once per level: stop it long before Python's stack does
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):
        _check_expansion(node)  # before construction: the constructed document shares aliased values
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {shown(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_VALUES values or MAX_YAML_DEPTH levels,
    or refer to themselves, counting each distinct node once (linear in the file, not in the expansion)."""
    size: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) with aliases expanded
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            values = 1 + sum(size[id(c)][0] for c in children)
            depth = 1 + max((size[id(c)][1] for c in children), default=0)
            size[id(node)] = values, depth
            open_nodes.discard(id(node))
            if values > MAX_YAML_VALUES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"its aliases expand to more than {MAX_YAML_VALUES:,} values (an alias bomb?)",
                    node.start_mark)
            if depth > MAX_YAML_DEPTH:
                raise yaml.constructor.ConstructorError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels once its aliases are expanded",
                    node.start_mark)
        elif id(node) in open_nodes:
            raise yaml.constructor.ConstructorError(None, None, "an alias refers to the value that contains it",
                                                    node.start_mark)
        elif id(node) not in size:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def yaml_value(text: str, what: str) -> Any:
    """A value given on the command line (`key=VALUE`), read as YAML with the same bounds as a file."""
    if text == "":
        return ""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what}: cannot parse value {shown(text)}: {' '.join(str(getattr(e, 'problem', e)).split())}"
                          ) from None


def shown(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to about `limit` characters, without building the whole repr first (a huge
    or deeply nested value is echoed in an error, never expanded)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    short.maxlevel = 3
    return clipped(short.repr(value), limit)


def clipped(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters with `...`: a key or message that echoes a huge value."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _model_at(loc: tuple, raw: Any) -> type[BaseModel] | None:
    """The pydantic model class that owns the last key of `loc`, for suggestions."""
    cls: Any = RunConfig
    node = raw
    for part in loc[:-1]:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            # a discriminated union member: pydantic puts the tag in loc
            if part in METHOD_CONFIGS:
                cls = METHOD_CONFIGS[part]
                continue
            return None
        ann = cls.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None
        cls = _unwrap(ann, node)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _unwrap(ann, node):
    import typing
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    if typing.get_origin(ann) is list and args:
        return _unwrap(args[0], None)
    if typing.get_origin(ann) is typing.Annotated:
        return _unwrap(args[0], node)
    if args:
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            return models[0]
        if isinstance(node, dict) and node.get("name") in METHOD_CONFIGS:
            return METHOD_CONFIGS[node["name"]]
    return ann


def _dotted(loc: tuple) -> str:
    """`method.lora.r` -> `method.r`: pydantic puts the union tag in the location; users never wrote it."""
    parts = [str(p) for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "method" and p in METHOD_CONFIGS)]
    # members of a plain union (`list[str] | Literal['all-linear']`) appear as labels such as
    # "list[str]" or "literal['all-linear']": not keys the user wrote
    return ".".join(p for p in parts if "[" not in p and "(" not in p)


def _expected(loc: tuple) -> str:
    owner = _model_at(loc[:[isinstance(p, str) and "[" in p for p in loc].index(True)], {})
    key = [p for p in loc if isinstance(p, str) and "[" not in p][-1]
    field = owner.model_fields.get(key) if owner else None
    return str(field.annotation).replace("typing.", "") if field else "another type"


def _format_errors(err: ValidationError, raw: dict, source: str) -> str:
    lines: list[str] = []
    union_paths: set[str] = set()
    for e in err.errors():
        loc = tuple(e["loc"])
        path = _dotted(loc)
        if e["type"] == "extra_forbidden":
            owner = _model_at(loc, raw)
            hint = suggest(loc[-1], owner.model_fields) if owner else ""
            lines.append(f"{source}: {clipped(path)}: unknown key{hint}")
        elif e["type"] == "union_tag_invalid":
            tag = e.get("input", {}).get("name") if isinstance(e.get("input"), dict) else None
            if tag in PLANNED_METHODS:
                lines.append(f"{source}: {path}.name: method {shown(tag)}: {PLANNED_METHODS[tag]}")
            else:
                lines.append(f"{source}: {path}.name: unknown method {shown(tag)}{suggest(tag, METHOD_CONFIGS)}; "
                             f"known: {', '.join(METHOD_CONFIGS)}")
        elif any(isinstance(p, str) and "[" in p for p in loc):  # one line per key, not per union member
            if path not in union_paths:
                union_paths.add(path)
                got = e.get("input")
                lines.append(f"{source}: {path}: wrong type (got {shown(got)}); expected {_expected(loc)}")
        else:
            lines.append(error_line(source, path, e))
    return error_lines(lines, source)


MAX_ERROR_LINES = 20


def error_lines(lines: list[str], source: str) -> str:
    """The error lines, the first MAX_ERROR_LINES of them: a list of 100,000 bad items is one
    mistake repeated, not 100,000 lines to scroll."""
    if len(lines) > MAX_ERROR_LINES:
        lines = [*lines[:MAX_ERROR_LINES], f"{source}: ... and {len(lines) - MAX_ERROR_LINES:,} more errors"]
    return "\n".join(lines)


def error_line(source: str, path: str, e: dict) -> str:
    """One pydantic error as `source: key.path: reason (got value)`, each part of a bounded length."""
    msg = clipped(e["msg"].removeprefix("Value error, "), 400)
    path = clipped(path)
    got = e.get("input")
    echo = "" if isinstance(got, (dict, list)) or e["type"] == "missing" else f" (got {shown(got)})"
    return f"{source}: {path}: {msg}{echo}" if path else f"{source}: {msg}{echo}"


def parse_config(raw: dict, source: str = "<config>") -> RunConfig:
    """Validate a raw dict into a RunConfig, turning pydantic's errors into ConfigError lines."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config must be a mapping of sections, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, raw, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                raw: dict | None = None, smoke: bool = False) -> RunConfig:
    """Read a YAML recipe (or a raw dict), apply overrides, validate.

    The run name defaults to the recipe's file name, so `recipes/alpaca_lora.yaml` writes to
    `runs/alpaca_lora/`. `smoke=True` then applies the recipe's `smoke` section: its tiny model,
    its step count, its overrides, and the run folder `<name>-smoke`.
    """
    cfg = _load(path, overrides, raw)
    if not smoke:
        return cfg
    quick = [f"model.name={cfg.smoke.model}", f"train.max_steps={cfg.smoke.max_steps}",
             f"output.name={cfg.output.name or 'run'}-smoke", *cfg.smoke.overrides]
    return _load(path, [*(overrides or []), *quick], raw)


def _load(path, overrides, raw) -> RunConfig:
    source = str(path) if path is not None else "<config>"
    if raw is None:
        if path is None:
            raw = {}
        else:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"{source}: {not_a_file(p, 'config file')}")
            try:
                raw = yaml.load(p.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f"{source}:{mark.line + 1}" if mark else source
                raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
            except UnicodeDecodeError as e:
                raise ConfigError(f"{source}: not UTF-8 text ({e.reason})") from None
    raw = apply_overrides(copy.deepcopy(raw), overrides or [])
    if isinstance(raw, dict) and path is not None:
        out = raw.setdefault("output", {}) if isinstance(raw.get("output", {}), dict) else raw.get("output")
        if isinstance(out, dict) and out.get("name") is None:
            out["name"] = Path(path).stem
    return parse_config(raw, source)


def not_a_file(path: Path, what: str) -> str:
    """Why `path` cannot be read as a `what`: missing, or a folder, a FIFO, a device (named)."""
    from tunewright.data.sources import path_kind  # imported late: sources.py imports this module

    try:
        kind = path_kind(path)
    except OSError as err:
        return f"cannot read the {what} ({err.strerror or err})"
    return f"no such {what}" if kind == "missing" else f"is {kind}, not a YAML file"


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (every default written out), as saved in the run folder."""
    from tunewright.secrets import redact_tree
    return yaml.safe_dump(redact_tree(cfg.model_dump(mode="json")), sort_keys=False, allow_unicode=True)
