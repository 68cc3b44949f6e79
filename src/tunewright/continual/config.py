"""The `continual` config file: a sequence of tasks trained one after another on one model, and
the strategies against forgetting compared on it. Validated like a run config (one line per bad
key, did-you-mean, `key=value` overrides, `--smoke`).

    scenario: class_incremental          # one head over the union of the tasks' labels
    tasks:
      - {name: sentiment, labels: [negative, positive],
         datasets: [{path: sentiment.jsonl, format: classification}],
         eval_datasets: [{path: sentiment_test.jsonl, format: classification}]}
      - {name: topics, labels: [sports, science], datasets: [...], eval_datasets: [...]}
    model: {name: smollm2-135m-instruct}
    method: {name: full}
    train: {max_steps: 40, learning_rate: 5.0e-5}
    strategies: {ewc: {weight: 1000}, replay: {ratio: 0.1}}   # settings of the strategies compared
    probes:                                                   # never trained: general skill kept?
      - {name: world_qa, metric: answer_accuracy,
         eval_datasets: [{path: world_qa_test.jsonl, format: messages}]}

Each task is a run (run.py, the one loop) with the run sections above, the task's data and the
strategy's changes, in `<output.dir>/<output.name>/<strategy>/<i>-<task>/`. Both scenarios train
one classification head over the union of the labels; they differ at test time: class_incremental
predicts among every label (the test does not say which task a row is from), task_incremental
among the row's own task's labels (it does: the task identity is used). Probes (continual/probes.py)
are generative tasks never trained, scored on the language model under the classifier before the
first task and after each one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from tunewright.config import format_errors, read_config
from tunewright.continual import generative, replay as replay_strategy
from tunewright.errors import ConfigError
from tunewright.models.methods import METHOD_CONFIGS
from tunewright.objectives import lwf as lwf_objective
from tunewright.regularizers import ewc as ewc_reg, l2_sp as l2_sp_reg, mas as mas_reg, si as si_reg
from tunewright.schema import (DataSource, MethodConfig, ModelConfig, OutputConfig, Section, SmokeConfig, TrainConfig,
                               yaml_booleans)

__all__ = ["Task", "Probe", "PROBE_FORMATS", "ContinualData", "Strategies", "ContinualConfig", "parse_continual_config",
           "load_continual_config"]


class Task(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description=(
        "The task's name: its run folder is <i>-<name>, its column in R."))
    labels: list[str] = Field(..., min_length=2, description="The task's classes (its rows' labels).")
    datasets: list[DataSource] = Field(..., min_length=1, description="The task's training data.")
    eval_datasets: list[DataSource] = Field(..., min_length=1, description="The task's test data (R's column).")

    @field_validator("labels", mode="before")
    @classmethod
    def _quoted_labels(cls, v):
        return yaml_booleans(v, "labels")


# the formats whose rows are a prompt and an answer: what a probe scores
PROBE_FORMATS = ("alpaca", "messages", "sharegpt", "prompt_completion")


class Probe(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description=(
        "The probe's name: its column in P (must differ from every task's name)."))
    eval_datasets: list[DataSource] = Field(..., min_length=1, description=(
        "Rows of a prompt and an answer (alpaca, messages, sharegpt, prompt_completion), never trained: encoded as "
        "a causal-LM run encodes them (data.template, the prompt masked), the answer's tokens scored."))
    metric: Literal["answer_accuracy", "answer_loss"] = Field("answer_accuracy", description=(
        "answer_accuracy: the share of answer tokens whose argmax next-token prediction is the reference token "
        "(teacher-forced; higher is better); answer_loss: the mean negative log-likelihood per answer token, in "
        "nats (lower is better)."))

    @field_validator("eval_datasets")
    @classmethod
    def _prompt_and_answer(cls, v):
        for src in v:
            if src.format not in PROBE_FORMATS:
                raise ValueError(f"format {src.format!r} ({src.path}): a probe scores an answer after a prompt; "
                                 f"use one of {', '.join(PROBE_FORMATS)}")
        return v


class ContinualData(Section):
    cutoff_len: int = Field(256, gt=0, description=(
        "Tokens kept per row (the classification head reads the last); a probe's rows are cut there too, counted."))
    template: str | None = Field(None, description=(
        "The chat template the probes' rows are rendered with: alpaca, chatml, llama3, a .jinja file, or null for "
        "the tokenizer's own. The tasks' classification rows use none. Its tokens must be in the base vocabulary."))


class Strategies(Section):
    """Each strategy's settings; one not compared is ignored."""

    ewc: ewc_reg.Config = Field(default_factory=ewc_reg.Config, description="ewc's regularizer settings.")
    si: si_reg.Config = Field(default_factory=si_reg.Config, description="si's regularizer settings.")
    mas: mas_reg.Config = Field(default_factory=mas_reg.Config, description="mas's regularizer settings.")
    l2_sp: l2_sp_reg.Config = Field(default_factory=l2_sp_reg.Config, description="l2_sp's regularizer settings.")
    replay: replay_strategy.Config = Field(default_factory=replay_strategy.Config, description="replay's buffer and ratio.")
    generative_replay: generative.Config = Field(default_factory=generative.Config, description=(
        "generative_replay's pseudo-rows: how many, how long, their share of a task's rows."))
    lwf: lwf_objective.Settings = Field(default_factory=lwf_objective.Settings, description=(
        "lwf's distillation weight and temperature (objectives/lwf.py; the teacher is the previous task's final/)."))

    @model_validator(mode="after")
    def _no_previous(self):
        for name in ("ewc", "si", "mas"):
            if getattr(self, name).previous is not None:
                raise ValueError(f"strategies.{name}.previous: the sequence sets it (the previous task's state); "
                                 f"remove it")
        return self


class ContinualConfig(Section):
    scenario: Literal["class_incremental", "task_incremental"] = Field(..., description=(
        "class_incremental: the test predicts among every task's labels; task_incremental: among the row's own "
        "task's (the task identity is given at test time). One head over the union of labels in both."))
    tasks: list[Task] = Field(..., min_length=2, description="The tasks, in training order.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model (the first task starts from it).")
    method: MethodConfig = Field(default_factory=lambda: METHOD_CONFIGS["lora"](), description=(
        "Which parameters train (full, lora, ...), the same for every task; each task continues the previous one's."))
    train: TrainConfig = Field(default_factory=TrainConfig, description="Each task's optimizer, schedule and loop.")
    data: ContinualData = Field(default_factory=ContinualData, description="Data settings shared by the tasks.")
    strategies: Strategies = Field(default_factory=Strategies, description="The compared strategies' settings.")
    output: OutputConfig = Field(default_factory=OutputConfig, description=(
        "Runs land in <dir>/<name>/<strategy>/<i>-<task>/; save_steps and save_total_limit apply to each task."))
    probes: list[Probe] = Field(default_factory=list, description=(
        "Generative tasks never trained, scored before the first task and after each one (P, beside R): the "
        "language model under the classifier, whose general skill the tasks may erase (continual/probes.py)."))
    smoke: SmokeConfig = Field(default_factory=SmokeConfig, description="What `--smoke` changes.")

    @model_validator(mode="before")
    @classmethod
    def _default_method(cls, raw):
        if isinstance(raw, dict) and isinstance(raw.get("method"), dict) and "name" not in raw["method"]:
            raw = {**raw, "method": {"name": "lora", **raw["method"]}}
        return raw

    @model_validator(mode="after")
    def _tasks(self):
        names = [t.name for t in self.tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"tasks: task names must differ; repeated: {', '.join(twice)}")
        probes = [p.name for p in self.probes]
        twice = sorted({n for n in probes if probes.count(n) > 1})
        if twice:
            raise ValueError(f"probes: probe names must differ; repeated: {', '.join(twice)}")
        shared = [n for n in probes if n in names]
        if shared:
            raise ValueError(f"probes: a probe's name must differ from the tasks' (a probe is never trained); "
                             f"named like a task: {', '.join(shared)}")
        return self

    def labels(self) -> list[str]:
        """The head's classes: the union of the tasks' labels, in task order."""
        return list(dict.fromkeys(label for t in self.tasks for label in t.labels))


def parse_continual_config(raw: dict, source: str = "<continual config>") -> ContinualConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the continual config must be a mapping of sections, got {type(raw).__name__}")
    try:
        return ContinualConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, raw, source, root=ContinualConfig)) from None


def load_continual_config(path=None, overrides: list[str] | None = None, raw: dict | None = None,
                          smoke: bool = False) -> ContinualConfig:
    """Read a continual config (YAML or a dict), apply overrides, validate; the output name defaults to
    the file's name. `smoke` swaps in the tiny model and step count of its `smoke` section, then its
    overrides, and writes to `<name>-smoke`."""
    cfg = read_config(path, overrides, raw, parse=parse_continual_config)
    if not smoke:
        return cfg
    quick = [f"model.name={cfg.smoke.model}", f"train.max_steps={cfg.smoke.max_steps}",
             f"output.name={cfg.output.name or 'continual'}-smoke", *cfg.smoke.overrides]
    return read_config(path, [*(overrides or []), *quick], raw, parse=parse_continual_config)
