"""Learning without Forgetting (Li & Hoiem 2017, "Learning without Forgetting", TPAMI): a
classification head trained on a new task while its answers on the *old* classes are distilled from
the model as it was before the task (the teacher), so the old classes' outputs move as little as the
new labels allow. No old data is kept: the teacher scores the new task's rows.

Per row, with z the student's head logits, z' the teacher's, O the old classes and y the new label:

    loss = CE(z, y) + λ · T² · KL(softmax(z'_O / T) || softmax(z_O / T))

CE is the classification objective's (objectives/classification.py: over every class of the head,
class weights included); the second term is `distill.distillation_loss` (Hinton et al. 2015, the T²
keeps its gradient on the scale of the hard term's as T changes) restricted to the old classes'
logits: with one head over the union of the labels (class-incremental), the new classes have no
teacher worth copying (the teacher never trained them), so only the old ones are distilled, as in
LwF's old-task heads. Both terms are summed over rows; the loop divides by the rows of the whole
accumulated batch, so the loss is a per-row mean and 4 micro-batches of 2 equal one batch of 8.

The teacher is a trained classifier folder (in a sequence: the previous task's final/), loaded once
(models/trained.py's `load_trained`: a full model, or the base with its LoRA adapter and head)
and frozen (objectives/reference.py). Not the adapter-disabled base: in a sequence of LoRA tasks the
adapter carries every earlier task, so switching it off would distil the untrained base. The
teacher is read from disk at setup, before a resume restores the student, so a resumed run
distils from the same model. Memory: one more model (the teacher) during the task.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from tunewright.errors import ConfigError
from tunewright.objectives import classification
from tunewright.objectives.distill import distillation_loss
from tunewright.sections import Section

__all__ = ["Settings", "Config", "HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "METRICS", "OUTPUTS", "misfit",
           "encode", "collate", "count", "end_ids", "render", "prepare_tokenizer", "fit_data", "model_config",
           "eval_metrics", "setup", "loss"]

# everything but the loss is the classification head's
HEAD, FORMATS, TEMPLATED, PACKABLE, UNIT, OUTPUTS = (classification.HEAD, classification.FORMATS,
                                                     classification.TEMPLATED, classification.PACKABLE,
                                                     classification.UNIT, classification.OUTPUTS)
(encode, collate, count, end_ids, render, prepare_tokenizer, fit_data, model_config,
 eval_metrics) = (classification.encode, classification.collate, classification.count, classification.end_ids,
                  classification.render, classification.prepare_tokenizer, classification.fit_data,
                  classification.model_config, classification.eval_metrics)
METRICS = {"ce": "mean", "kd": "mean"}  # the hard term and λ·T²·KL, per row


class Settings(Section):
    """What a user chooses (the continual config's `strategies.lwf`); the rest a sequence fills in."""

    weight: float = Field(1.0, ge=0, description=(
        "λ: weight of the distillation term λ·T²·KL(teacher || student) over the old classes, beside the labels' "
        "cross-entropy (weight 1)."))
    temperature: float = Field(2.0, gt=0, description="T: both old-class distributions are softmax(logits / T).")


class Config(classification.Config, Settings):
    name: Literal["lwf"] = Field("lwf", description=(
        "Learning without Forgetting: a classification head, its old classes' logits distilled from a frozen "
        "teacher (the model before this task)."))
    teacher: str | None = Field(None, description=(
        "The teacher: a trained classifier folder (a run folder or its final/); in a continual sequence the previous "
        "task's final/."))
    old_labels: list[str] = Field(default_factory=list, description=(
        "The old classes whose logits are distilled (the earlier tasks' labels); each must be a class of the "
        "teacher's head and of `labels`."))

    @model_validator(mode="after")
    def _old_are_classes(self):
        if self.problem_type != "single_label":
            raise ValueError("objective.problem_type: lwf distils a softmax over classes: single_label only")
        missing = [n for n in self.old_labels if self.labels is not None and n not in self.labels]
        if missing:
            raise ValueError(f"objective.old_labels: {missing[0]!r} is not one of objective.labels {self.labels}")
        return self


def misfit(run_cfg) -> str | None:
    if not run_cfg.objective.teacher:
        return "objective.teacher: lwf needs a teacher (the classifier before this task: a run folder or its final/)"
    if len(run_cfg.objective.old_labels) < 2:
        return "objective.old_labels: lwf distils a distribution over at least two old classes"
    return classification.misfit(run_cfg)


class Teacher:
    """The frozen teacher and, for the student's and the teacher's heads, the old classes' indices."""

    def __init__(self, reference, student_index: list[int], teacher_index: list[int]):
        self.reference, self.student_index, self.teacher_index = reference, student_index, teacher_index


def setup(model, cfg: Config, data=None) -> Teacher:
    """The teacher loaded frozen on the student's device; the old classes located in both heads by name."""
    from tunewright.models.load import head_of
    from tunewright.models.trained import load_trained
    from tunewright.objectives.reference import frozen

    teacher, _ = load_trained(cfg.teacher)
    if head_of(teacher) != HEAD:
        raise ConfigError(f"objective.teacher: {cfg.teacher} is not a classifier (head {head_of(teacher)!r}); lwf "
                          f"distils a classification head")
    theirs, ours = teacher.config.label2id, {n: i for i, n in enumerate(cfg.labels)}
    for head, classes in (("the teacher " + str(cfg.teacher), theirs), ("the student (objective.labels or the "
                                                                        "training rows')", ours)):
        missing = [n for n in cfg.old_labels if n not in classes]
        if missing:
            raise ConfigError(f"objective.old_labels: {missing[0]!r} is not a class of {head} (its classes: "
                              f"{list(classes)})")
    return Teacher(frozen(teacher.to(next(model.parameters()).device)),
                   [ours[n] for n in cfg.old_labels], [theirs[n] for n in cfg.old_labels])


def row_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, cfg: Config,
              teacher: Teacher) -> tuple[torch.Tensor, torch.Tensor]:
    """([B] cross-entropy over every class, [B] λ·T²·KL over the old classes) per row, fp32."""
    ce = classification.row_losses(student_logits, targets, cfg)
    kd = distillation_loss(student_logits[:, teacher.student_index], teacher_logits[:, teacher.teacher_index],
                           cfg.temperature)
    return ce, cfg.weight * kd


def loss(model, batch: dict, cfg: Config, state: Teacher | None = None) -> tuple[torch.Tensor, dict]:
    """Summed CE + λ·T²·KL over the rows (module docstring), both terms as metrics, and the rows'
    logits and targets for the evaluation metrics (as classification's)."""
    if state is None:
        raise ConfigError("objective lwf: no teacher was set up (objectives.setup)")
    logits = classification.classifier_logits(model, batch)
    teacher_logits = state.reference(lambda teacher: classification.classifier_logits(teacher, batch))
    targets = classification.targets_of(batch, cfg, logits.device)
    ce, kd = row_terms(logits, teacher_logits, targets, cfg, state)
    return (ce + kd).sum(), {"ce": ce.sum().detach(), "kd": kd.sum().detach(), "logits": logits.detach().float(),
                             "targets": targets}
