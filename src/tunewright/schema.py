"""The schema of a run: one YAML file's sections, validated by pydantic v2, every key documented.

Each component owns its section where it lives (the model's in models/load.py, a method's or an
objective's in its own file); this module assembles them into `RunConfig`. Reading YAML,
overrides and error messages are config.py's. Unknown keys are errors with "did you mean"; keys
that a later release implements are rejected with "not supported yet" rather than accepted and
ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from tunewright import plugins
from tunewright.data.tabular import TabularOptions
from tunewright.errors import shown
from tunewright.models.load import ModelConfig
from tunewright.models.methods import METHOD_CONFIGS, METHODS
from tunewright.models.methods import misfit as method_misfit
from tunewright.objectives import OBJECTIVE_CONFIGS, OBJECTIVES, misfit
from tunewright.registry import suggest
from tunewright.regularizers import REGULARIZER_CONFIGS
from tunewright.sections import Section

__all__ = [
    "Section", "ModelConfig", "DataSource", "DataConfig", "ObjectiveConfig", "EarlyStopping", "TrainConfig",
    "EvalConfig", "OutputConfig", "SmokeConfig", "RunConfig", "MethodConfig", "RegularizerConfig", "EVAL_METRICS",
    "refresh_unions", "yaml_booleans",
    "MAX_EPOCHS", "NAME_MAX",
]


class DataSource(Section):
    path: str = Field(..., description="A json/jsonl/csv/parquet file, a `datasets` saved folder, or a hub dataset name.")
    format: str = Field("alpaca", description=(
        "Row format: alpaca, messages, sharegpt, prompt_completion, text, classification, tabular; for dpo/kto: "
        "preference, ranked, unpaired; for contrastive: pairs."))
    split: str = Field("train", description="Split to read from a saved folder or hub dataset.")
    subset: str | None = Field(None, description="Hub dataset configuration name.")
    file_type: Literal["auto", "json", "jsonl", "csv", "parquet"] = Field(
        "auto", description="File type; `auto` goes by the file extension.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map of our field name to the dataset's column, e.g. {instruction: question}.")
    roles: dict[str, str] = Field(
        default_factory=dict, description="Extra role names mapped to system/user/assistant (sharegpt `from` values).")
    tabular: TabularOptions | None = Field(None, description=(
        "With format tabular: the target column, the features, their units, how a row is written as text and "
        "the question asked (data/tabular.py)."))
    weight: float = Field(1.0, gt=0, description="Mixture weight: 2 repeats the rows twice, 0.5 keeps a seeded half.")
    phrasings: list[str] | str | None = Field(None, description=(
        "Instruction phrasings (FLAN style), one drawn per row (seeded by train.seed, source and line): a list of "
        "user-turn templates with {instruction} and {input}, or the name of a built-in set (the lab tasks "
        "arithmetic, string_skills, dialogue_summary, extraction, world_qa). Not the chat template (data.template)."))
    shots: list[Annotated[int, Field(ge=0, le=32)]] = Field(default_factory=lambda: [0], description=(
        "In-context examples per row, one count drawn per row (seeded) from this list: [0] zero-shot, [0, 2] "
        "FLAN's mix of zero- and 2-shot. Examples are other training rows of this source, placed as earlier "
        "turns without loss."))

    @field_validator("format")
    @classmethod
    def _known_format(cls, v):
        from tunewright.data.formats import FORMATS  # imported late: formats.py imports this module
        if v not in FORMATS:
            raise ValueError(f"unknown data format {shown(v)}{suggest(v, FORMATS.names())}; known: {', '.join(FORMATS.names())}")
        return v

    @field_validator("phrasings")
    @classmethod
    def _phrasings(cls, v):
        from tunewright.data.phrasings import builtin_sets, check_template  # late: data imports this module
        if isinstance(v, str):
            sets = builtin_sets()
            if v not in sets:
                raise ValueError(f"unknown phrasing set {shown(v)}{suggest(v, sets)}; built-in sets: {', '.join(sets)} "
                                 f"(or give a list of templates)")
        elif v is not None:
            if not v:
                raise ValueError("an empty list; give templates, or leave phrasings out")
            for i, text in enumerate(v):
                reason = check_template(text)
                if reason:
                    raise ValueError(f"template {i}: {reason}")
        return v

    @field_validator("shots")
    @classmethod
    def _shots(cls, v):
        if not v:
            raise ValueError("give at least one count ([0] is zero-shot)")
        return v

    @model_validator(mode="after")
    def _phrasable(self):
        if self.format == "text" and (self.phrasings is not None or self.shots != [0]):
            raise ValueError("phrasings and shots need an instruction turn; format 'text' has none")
        return self

    @model_validator(mode="after")
    def _tabular_options(self):
        if self.tabular is not None and self.format != "tabular":
            raise ValueError(f"tabular: options for format tabular, but this source's format is {self.format!r}")
        return self


class DataConfig(Section):
    datasets: list[DataSource] = Field(..., min_length=1, description="Training data sources, mixed by weight.")
    eval_datasets: list[DataSource] = Field(
        default_factory=list, description="Separate evaluation sources (instead of `val_set_size`).")
    template: str | None = Field(
        None, description="Prompt template: alpaca, chatml, llama3, a .jinja file, or null for the tokenizer's own.")
    system_prompt: str | None = Field(None, description="System message added to conversations that have none.")
    val_set_size: float = Field(0, ge=0, description="Held-out rows: a count (>= 1) or a fraction (< 1), seeded.")
    training_size: int | None = Field(None, gt=0, description="Use only N rows of each training source (see training_sample).")
    training_sample: Literal["first", "random"] = Field("first", description=(
        "Which training_size rows: `first` N of the file, before val_set_size holds rows out; `random`: a seeded "
        "sample of N after the validation split (the course script's order)."))
    cutoff_len: int = Field(512, gt=0, description="Maximum tokens per example.")
    max_prompt_len: int | None = Field(None, gt=0, description=(
        "Preference formats: a longer prompt is cut from the left to this many tokens (its end, next to the "
        "answer, is kept); the answers then get cutoff_len minus the prompt."))
    min_response_words: int = Field(0, ge=0, description=(
        "Preference formats: drop (and count) pairs whose chosen, rejected or unpaired answer has fewer words."))
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


EVAL_METRICS = ("eval_loss", "eval_perplexity")  # what evaluation during training always produces


def _known_metric(v: str) -> str:
    # eval.metrics / eval.labels add `eval_<key>` metrics; whether a given key is produced is checked
    # at the first evaluation (the loop stops with the list of what was produced)
    if v not in EVAL_METRICS and not v.startswith("eval_"):
        raise ValueError(f"unknown metric {shown(v)}{suggest(v, EVAL_METRICS)}; evaluation produces "
                         f"{', '.join(EVAL_METRICS)} and eval_<metric> for eval.metrics / eval.labels")
    return v


def yaml_booleans(labels, key: str):
    """Refuse labels YAML turned into booleans (a bare No/Yes, on/off) with the fix, instead of a type error."""
    if isinstance(labels, list) and any(isinstance(x, bool) for x in labels):
        raise ValueError(f"{key}: {labels} holds booleans: YAML reads a bare No/Yes (or on/off) as false/true; "
                         f'quote them: ["No", "Yes"]')
    return labels


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
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = Field("adamw", description=(
        "adamw (torch, fused), adamw_8bit (bitsandbytes: moments stored in 8 bits, blockwise; about a quarter of "
        "AdamW's state; CPU and CUDA) or paged_adamw_8bit (the same, its state in CUDA unified memory that pages to "
        "the host under memory pressure: CUDA only)."))
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm; null disables.")
    mixed_precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision for forward passes: auto (bf16 on CUDA devices with bf16 and on "
                            "CPUs with AMX or AVX512-BF16, else fp32; a resume keeps the checkpoint's), fp32 "
                            "(none), bf16, or fp16 (CUDA only). `no` (accelerate's name) is read as fp32.")
    seed: int = Field(42, description="Seed for data order, splits, dropout and initialisation.")
    logging_steps: int = Field(1, gt=0, description="Write metrics every N optimizer steps.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Extra metric sinks besides metrics.jsonl.")
    resume: str | None = Field(None, description="`auto` (latest complete checkpoint of this run) or a checkpoint path.")
    nan_policy: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/inf loss: stop with the step and batch, or skip that batch's update.")
    max_nan_skips: int = Field(3, ge=0, description="With nan_policy: skip, stop after this many skipped batches.")

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no_is_fp32(cls, v):
        # accelerate calls full precision "no", and YAML reads an unquoted `no` (also `off`, `false`)
        # as the boolean false: all of them mean fp32, the name config.yaml writes
        if v is False or (isinstance(v, str) and v.lower() == "no"):
            return "fp32"
        return v

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
    load_best: bool = Field(False, description=(
        "final/ holds the weights of the best evaluation (by best_metric and best_mode) instead of the last "
        "step's; each new best is saved as a checkpoint (kept by save_total_limit). Needs eval.steps."))

    @field_validator("best_metric")
    @classmethod
    def _metric(cls, v):
        return _known_metric(v)

    @field_validator("labels", mode="before")
    @classmethod
    def _quoted_labels(cls, v):
        return yaml_booleans(v, "eval.labels")

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
        if self.load_best and not self.steps:
            raise ValueError("eval.load_best needs eval.steps (the best step is chosen among the evaluations)")
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


def _union(configs) -> Any:
    """One config section out of several, picked by its `name` (a discriminated union)."""
    return Annotated[Union[tuple(configs.values())], Field(discriminator="name")]


MethodConfig = _union(METHOD_CONFIGS)
ObjectiveConfig = _union(OBJECTIVE_CONFIGS)
RegularizerConfig = _union(REGULARIZER_CONFIGS)


class RunConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    data: DataConfig = Field(..., description="Training and evaluation data.")
    method: MethodConfig = Field(default_factory=lambda: METHOD_CONFIGS["lora"](),
                                 description="Which parameters train, and how (full, selective, lora, ia3, prompt, prefix, bottleneck).")
    objective: ObjectiveConfig = Field(default_factory=lambda: OBJECTIVE_CONFIGS["auto"](), description=(
        "What is learned: the loss, the model head it needs and how data becomes batches (auto, causal_lm, seq2seq)."))
    regularizers: list[RegularizerConfig] = Field(default_factory=list, description=(
        "Penalties on the weights, added once per optimizer step; each item's `name` picks which (l2_sp). "
        "Logged as `reg_<name>` beside `loss`, which is the objective's alone."))
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimizer, schedule and loop.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation during training.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Run folder and checkpoints.")
    smoke: SmokeConfig = Field(default_factory=SmokeConfig,
                               description="What `--smoke` changes: a tiny model and a few steps, to check a recipe end to end in seconds.")
    plugins: list[str] = Field(default_factory=list, description=(
        "Python modules (names on the import path, or .py files relative to the config) imported before the "
        "config is read: they may register methods, objectives, regularizers and data formats. Importing "
        "runs their code, as trust_remote_code does for a model: list only code you trust."))

    @model_validator(mode="before")
    @classmethod
    def _default_method(cls, raw):
        # `method: {r: 16}` or an override `method.r=16` means LoRA, the default method; an objective
        # section without a name (`objective: {chunk_size: 512}`) is the default, auto
        for section, default in (("method", "lora"), ("objective", "auto")):
            if isinstance(raw, dict) and isinstance(raw.get(section), dict) and "name" not in raw[section]:
                raw = {**raw, section: {"name": default, **raw[section]}}
        return raw

    @model_validator(mode="after")
    def _batches(self):
        if self.train.batch_size % self.train.micro_batch_size:
            raise ValueError(f"train.batch_size ({self.train.batch_size}) must be a multiple of "
                             f"train.micro_batch_size ({self.train.micro_batch_size})")
        if self.objective.name != "auto":  # auto is checked once the model is known (run.build)
            reason = misfit(OBJECTIVES.get(self.objective.name), self)
            if reason:
                raise ValueError(reason)
        reason = method_misfit(METHODS.get(self.method.name), self)
        if reason:
            raise ValueError(reason)
        return self

    @field_validator("regularizers")
    @classmethod
    def _each_once(cls, v):
        names = [r.name for r in v]
        twice = next((i for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:  # one state file and one reg_<name> metric per name
            raise ValueError(f"{names[twice]!r} is listed twice (items {names.index(names[twice])} and {twice}); "
                             f"give each regularizer once")
        return v

    def run_dir(self) -> Path:
        return Path(self.output.dir) / (self.output.name or "run")


def refresh_unions() -> None:
    """Rebuild RunConfig's `method`, `objective` and `regularizers` unions from the registries, after
    a plug-in registered a member (pydantic builds a union once, at class creation)."""
    fields = RunConfig.model_fields
    fields["method"].annotation = _union(METHOD_CONFIGS).__origin__
    fields["objective"].annotation = _union(OBJECTIVE_CONFIGS).__origin__
    fields["regularizers"].annotation = list[_union(REGULARIZER_CONFIGS)]
    RunConfig.model_rebuild(force=True)


plugins.AFTER_LOAD.append(refresh_unions)  # a plug-in loaded from now on joins the unions at once
