"""The schema of an eval config: named candidates, one dataset, the task, metrics, generation settings.

    tunewright eval recipes/flan_t5_dialogsum_compare.yaml
    tunewright eval --model M [--adapter A | --run R] --data D --metrics rouge,bleu
    tunewright eval --run runs/rec --data test.jsonl task=score 'labels=["No", "Yes"]'

`task` says what is asked of every candidate (eval/tasks.py): `generate` answers and scores the text
with `metrics`; `score` reads P(label | prompt) over `labels` (no generation); `multiple_choice` runs
the MMLU-style harness on question/choices/answer rows; `classify` reads a classification head's
probabilities. The last three report accuracy, macro F1 and AUC (multiple choice: accuracy overall
and per subject) instead of `metrics`.

Every candidate answers the same prompts with the same generation settings; the first one is the
baseline the others' improvements are measured against. Validation is the same as a run's: unknown
keys are errors with "did you mean", `a.b=value` overrides apply, `--smoke` applies the config's
`smoke.overrides` (tiny models, a few rows) and writes to `<name>-smoke`.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from tunewright.config import (DataSource, UniqueKeyLoader, apply_overrides, clipped, error_line, error_lines,
                               not_a_file, shown)
from tunewright.data.tabular import TabularOptions
from tunewright.errors import ConfigError
from tunewright.registry import suggest
from tunewright.schema import NAME_MAX, yaml_booleans
from tunewright.sections import Section

__all__ = ["Candidate", "EvalData", "Generation", "MultipleChoice", "EvalOutput", "EvalSmoke", "EvalRunConfig", "TASKS",
           "NOT_FOR_GENERATION", "metric_names", "parse_eval_config", "load_eval_config"]


# Registered metrics that cannot score generated text: they need class scores, not strings.
NOT_FOR_GENERATION = {"auc": "needs class probabilities, not generated text (use a scoring eval)"}


def metric_names() -> list[str]:
    """The metric names `metrics:` accepts: the metrics registry, less those that need scores."""
    from tunewright.eval.metrics import METRICS

    return [n for n in METRICS.names() if n not in NOT_FOR_GENERATION]


def _plain_name(value: str, what: str) -> str:
    if not value or value in {".", ".."} or any(c in value for c in "/\\\0"):
        raise ValueError(f"{what} {shown(value)} must be a plain file name (no '/', '..')")
    return value


class Candidate(Section):
    name: str = Field(..., description="Name in tables, plots and file names (e.g. zero-shot, full, lora).")
    model: str | None = Field(
        None, description="A model folder, hub id or alias; with `adapter` or `run`, the base model to load it on.")
    adapter: str | None = Field(None, description="A PEFT adapter folder (e.g. runs/NAME/final).")
    run: str | None = Field(
        None, description="A run folder: its final/ is evaluated and its metrics.jsonl curves are plotted.")
    template: str | None = Field(
        None, description="Chat template for a plain `model` (alpaca, chatml, llama3, a .jinja file); default: "
                          "the tokenizer's own, or plain text when it has none. Trained folders use their own.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype the weights load in.")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return _plain_name(v, "candidate name")

    @model_validator(mode="after")
    def _one_source(self):
        if self.adapter and self.run:
            raise ValueError(f"candidate {shown(self.name)}: give adapter or run, not both")
        if not (self.model or self.adapter or self.run):
            raise ValueError(f"candidate {shown(self.name)}: give model, adapter or run")
        if self.template and (self.adapter or self.run):
            raise ValueError(f"candidate {shown(self.name)}: template applies to a plain model only; a trained folder "
                             f"is prompted with the template it was trained with")
        return self

    def source(self) -> str:
        """What is loaded, in words (for tables)."""
        trained = self.adapter or self.run
        if trained:
            return f"{trained} on {self.model}" if self.model else trained
        return self.model


class EvalData(Section):
    path: str = Field(..., description="A json/jsonl/csv/parquet file, a `datasets` saved folder, or a hub dataset name.")
    format: str = Field("alpaca", description="Row format (alpaca, messages, sharegpt, prompt_completion): the "
                                              "prompt is the non-assistant part, the reference the last reply.")
    split: str = Field("test", description="Split to read from a saved folder or hub dataset.")
    subset: str | None = Field(None, description="Hub dataset configuration name.")
    file_type: Literal["auto", "json", "jsonl", "csv", "parquet"] = Field("auto", description="File type; `auto` goes by the extension.")
    columns: dict[str, str] = Field(default_factory=dict, description="Map of our field name to the dataset's column.")
    roles: dict[str, str] = Field(default_factory=dict, description="Extra role names mapped to system/user/assistant.")
    tabular: TabularOptions | None = Field(None, description="With format tabular: target, features, serialization, question.")
    skip: int = Field(0, ge=0, description="Leave out the first N rows (e.g. the rows a recipe trained on).")
    limit: int | None = Field(None, gt=0, description="Use at most N rows after `skip`.")
    on_error: Literal["raise", "skip"] = Field("raise", description="Bad rows: stop with an error, or skip and count them.")
    max_skipped: float = Field(0.01, ge=0, description="With on_error=skip: the most rows skipped (count, or fraction < 1).")
    shots: int = Field(0, ge=0, le=32, description=(
        "In-context examples before each prompt (the in-context-learning baseline): k rows of `shots_from`, "
        "drawn per row (seeded by generation.seed), never the row itself; earlier turns for a templated model, "
        "prompt + reply blocks for plain text."))
    shots_from: str | None = Field(None, description="The file the examples come from (same format and columns as `path`).")
    group_by: str | None = Field(None, description=(
        "A column of the rows (e.g. task): the scores are also computed per value, each group as its own corpus."))

    @model_validator(mode="after")
    def _shots_need_a_file(self):
        if self.shots and not self.shots_from:
            raise ValueError(f"data.shots: {self.shots} examples need data.shots_from, the file to draw them from")
        if self.shots_from and not self.shots:
            raise ValueError("data.shots_from is set but data.shots is 0; give the number of examples")
        return self

    @field_validator("format")
    @classmethod
    def _format(cls, v):
        from tunewright.data.formats import FORMATS

        if v == "text":
            raise ValueError("format 'text' has no reply to compare against; use alpaca, messages, sharegpt "
                             "or prompt_completion")
        if v not in FORMATS:
            raise ValueError(f"unknown data format {shown(v)}{suggest(v, FORMATS.names())}; known: {', '.join(FORMATS.names())}")
        return v

    def source(self, path: str | None = None) -> DataSource:
        """The `DataSource` the shared readers and formats take (of `path`, default the data's own)."""
        return DataSource(path=path or self.path, format=self.format, split=self.split, subset=self.subset,
                          file_type=self.file_type, columns=self.columns, roles=self.roles, tabular=self.tabular)


class Generation(Section):
    max_new_tokens: int = Field(64, gt=0, description="New tokens per answer at most.")
    batch_size: int = Field(8, gt=0, description="Prompts per generate() call.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (with do_sample).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (with do_sample).")
    stop: list[str] = Field(default_factory=list, description="Stop strings: the answer is cut at the first.")
    seed: int = Field(0, description="Seed for sampling (the same for every candidate).")


class MultipleChoice(Section):
    k_shot: int = Field(0, ge=0, description="Solved examples before each question (from `dev`, else the other rows).")
    mode: Literal["letter", "text", "cloze"] = Field("letter", description=(
        "letter: score ' A', ' B', ... after the listed choices (MMLU); text: score each choice's text after the "
        "listed choices; cloze: the choices are not listed, each one's text is scored after 'Answer:'."))
    normalize: Literal["chars", "bytes", "tokens"] | None = Field(None, description=(
        "text and cloze: divide a choice's log-likelihood by its characters, UTF-8 bytes or tokens."))
    dev: str | None = Field(None, description="A jsonl file of solved questions the k shots come from.")


TASKS = ("generate", "score", "multiple_choice", "classify")


class EvalOutput(Section):
    name: str | None = Field(None, description="Output folder name; default: the config's file name (a config "
                                               "given as a dict: eval-<candidate names>).")
    dir: str = Field("runs", description="Parent folder of the output folder.")
    samples: int = Field(5, ge=0, description="Prompts shown with every candidate's answer in report.md.")
    overwrite: bool = Field(False, description=(
        "Replace an earlier evaluation in the output folder: removes only what an evaluation writes (results.json, "
        "report.md, outputs-*.jsonl, *.png) and refuses when the folder holds anything else. A training run's "
        "folder is always refused."))

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return v if v is None else _plain_name(v, "output name")


class EvalSmoke(Section):
    overrides: list[str] = Field(
        default_factory=list, description="`key=value` overrides `--smoke` applies (tiny models, few rows).")


class EvalRunConfig(Section):
    candidates: list[Candidate] = Field(..., min_length=1, description="Models to compare; the first is the baseline.")
    task: Literal["generate", "score", "multiple_choice", "classify"] = Field("generate", description=(
        "generate: answer, then score the text with `metrics`; score: P(label | prompt) over `labels`, no generation; "
        "multiple_choice: question/choices/answer rows by log-likelihood; classify: a classification head's "
        "probabilities. All but generate report accuracy, macro F1 and AUC (multiple choice: accuracy per subject)."))
    labels: list[str] | None = Field(None, description="task score: the labels scored after each prompt, e.g. [No, Yes] "
                                                       "(with two, AUC is of the second).")
    multiple_choice: MultipleChoice = Field(default_factory=MultipleChoice, description="task multiple_choice: the harness' settings.")
    data: EvalData = Field(..., description="The prompts and references every candidate is scored on.")
    metrics: list[str] = Field(default_factory=lambda: ["rouge"], min_length=1,
                               description="Metric names (the metrics registry), e.g. rouge, bleu, exact_match.")
    metric_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "Keyword options per listed metric, e.g. {rouge: {use_stemmer: true}} (the course's FLAN-T5 lab) or "
        "{bleu: {tokenize: intl, smooth_method: floor}}; each result's settings string records them."))
    generation: Generation = Field(default_factory=Generation, description="Decoding, the same for every candidate.")
    output: EvalOutput = Field(default_factory=EvalOutput, description="Where results.json, report.md, plots and outputs go.")
    smoke: EvalSmoke = Field(default_factory=EvalSmoke, description="What `--smoke` changes.")

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v):
        known = metric_names()
        for name in v:
            if name in NOT_FOR_GENERATION:
                raise ValueError(f"metric {shown(name)} {NOT_FOR_GENERATION[name]}")
            if name not in known:
                raise ValueError(f"unknown metric {shown(name)}{suggest(name, known)}; known: {', '.join(known)}")
        if len(set(v)) != len(v):
            raise ValueError(f"metric listed twice: {v}")
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _quoted_labels(cls, v):
        return yaml_booleans(v, "labels")

    @model_validator(mode="after")
    def _task_settings(self):
        if self.task != "generate" and "metrics" in self.model_fields_set:
            raise ValueError(f"metrics: task {self.task!r} reports its own (accuracy, macro F1, AUC); remove metrics")
        if (self.task == "score") != (self.labels is not None):
            raise ValueError("labels: task score needs the labels to score (e.g. [No, Yes])" if self.task == "score"
                             else f"labels: only task score reads labels (the task is {self.task!r})")
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError(f"labels: at least two, got {self.labels}")
        if self.task != "multiple_choice" and "multiple_choice" in self.model_fields_set:
            raise ValueError(f"multiple_choice: settings of task multiple_choice (the task is {self.task!r})")
        if self.task == "classify" and self.data.format not in ("classification", "tabular"):
            raise ValueError(f"data.format: task classify reads classification or tabular rows, not {self.data.format!r}")
        for key, value in (("data.shots", self.data.shots), ("data.group_by", self.data.group_by),
                           ("metric_options", self.metric_options)):
            if self.task != "generate" and value:  # they shape generated answers and their text metrics
                raise ValueError(f"{key}: applies to task generate (the task is {self.task!r})")
        return self

    @model_validator(mode="after")
    def _options_fit_the_metrics(self):
        from tunewright.eval.metrics import metric_options

        for name, options in self.metric_options.items():
            if name not in self.metrics:
                raise ValueError(f"metric_options.{name}: {shown(name)} is not in metrics {self.metrics}"
                                 f"{suggest(name, self.metrics)}")
            known = metric_options(name)
            for key in options:
                if key not in known:
                    raise ValueError(f"metric_options.{name}.{key}: unknown option{suggest(key, known)}; "
                                     f"{name} takes {', '.join(known) or 'no options'}")
        return self

    @model_validator(mode="after")
    def _unique_names(self):
        names = [c.name for c in self.candidates]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"candidate names must differ; repeated: {', '.join(twice)}")
        return self

    def default_name(self) -> str:
        """The output folder's name: `output.name` (a config file's own name unless set), else, for a
        config given as a dict, the candidates' names: evaluations of other candidates never share a
        folder, and a repeated one is refused as not empty (never replaced without `overwrite`)."""
        if self.output.name:
            return self.output.name
        names = [c.name for c in self.candidates]
        joined = "eval-" + "-".join(names)
        if len(joined.encode("utf-8", "surrogatepass")) <= NAME_MAX:
            return joined
        return f"eval-{names[0]}-and-{len(names) - 1}-more"  # a file system takes NAME_MAX bytes per name

    def out_dir(self) -> Path:
        return Path(self.output.dir) / self.default_name()


# ---------------------------------------------------------------- loading and errors

def _owner(loc: tuple) -> type[BaseModel] | None:
    """The section class that holds the last key of `loc` (for did-you-mean on unknown keys)."""
    cls: typing.Any = EvalRunConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        cls = field.annotation
        while typing.get_args(cls) and not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            cls = next((a for a in typing.get_args(cls) if a is not type(None)), None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            owner = _owner(loc)
            lines.append(f"{source}: {clipped(path)}: unknown key{suggest(loc[-1], owner.model_fields) if owner else ''}")
            continue
        lines.append(error_line(source, path, e))
    return error_lines(lines, source)


def parse_eval_config(raw: dict, source: str = "<eval config>") -> EvalRunConfig:
    """Validate a raw dict, turning pydantic's errors into ConfigError lines."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the eval config must be a mapping of sections, got {type(raw).__name__}")
    try:
        return EvalRunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: {not_a_file(path, 'eval config file')}")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from None


def load_eval_config(path: str | Path | None = None, overrides: list[str] | None = None,
                     raw: dict | None = None, smoke: bool = False) -> EvalRunConfig:
    """Read an eval config (YAML file or raw dict), apply overrides, validate. The output name
    defaults to the file's name. `smoke` applies the config's `smoke.overrides` first (the user's
    overrides still win) and writes to `<name>-smoke`."""
    source = str(path) if path is not None else "<eval config>"
    given = copy.deepcopy(raw) if raw is not None else _read_yaml(Path(path)) if path is not None else {}
    if not isinstance(given, dict):
        return parse_eval_config(given, source)

    def build(first: list[str]) -> dict:
        out = apply_overrides(apply_overrides(copy.deepcopy(given), first), overrides or [])
        section = out.get("output")
        if path is not None and (section is None or isinstance(section, dict)) and not (section or {}).get("name"):
            out["output"] = {**(section or {}), "name": Path(path).stem}
        return out

    cfg = parse_eval_config(build([]), source)  # the smoke section itself must be valid first
    if not smoke:
        return cfg
    raw = build(list(cfg.smoke.overrides))
    raw["output"] = {**raw.get("output", {}), "name": f"{cfg.default_name()}-smoke"}
    return parse_eval_config(raw, source)
