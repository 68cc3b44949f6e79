"""IA3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning") through peft: learned vectors rescale activations, nothing else trains.

    attention (k, v):  y = l ⊙ (W x)               l [out], one per output feature
    feed-forward:      y = W (l ⊙ x)               l [in], on the input of the down projection

The vectors start at one, so training starts from the base model exactly. peft picks the modules
per architecture when `target_modules` is not given (Llama: k_proj, v_proj, down_proj); the
`feedforward_modules` are those scaled on their input. Saves a PEFT-format adapter; merging
multiplies each vector into its weight's rows (or columns).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge", "CANNOT_MERGE", "FORMAT", "load_for_inference"]

FORMAT = "IA3"
CANNOT_MERGE = None  # l ⊙ (W x) = (diag(l) W) x: the vector folds into W
MARKER = "ia3_"


class Config(Section):
    name: Literal["ia3"] = Field("ia3", description="Learned rescaling vectors (IA3) through peft.")
    target_modules: list[str] | None = Field(None, description=(
        "Module names to rescale; default: peft's choice for the architecture (Llama: k_proj, v_proj, down_proj)."))
    feedforward_modules: list[str] | None = Field(None, description=(
        "Which of target_modules are feed-forward (scaled on their input, not their output); default: peft's "
        "choice for the architecture. Must be a subset of target_modules."))

    @model_validator(mode="after")
    def _subset(self):
        if self.feedforward_modules is not None and self.target_modules is None:
            raise ValueError("feedforward_modules needs target_modules (it must be a subset of them)")
        if self.feedforward_modules and not set(self.feedforward_modules) <= set(self.target_modules):
            extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
            raise ValueError(f"feedforward_modules {extra} are not in target_modules {self.target_modules}")
        return self


def apply(model, cfg: Config, *, new_token_ids=()):
    """Wrap `model` in a PeftModel whose only trainable parameters are the IA3 vectors."""
    from peft import IA3Config

    from tunewright.models import peft_adapters
    from tunewright.models.load import peft_task_type

    peft_adapters.refuse_new_tokens(new_token_ids, "ia3")
    peft_adapters.check_names(model, cfg.target_modules, "method.target_modules")
    peft_adapters.check_names(model, cfg.feedforward_modules, "method.feedforward_modules")
    kwargs = {}
    if cfg.target_modules is not None:
        kwargs["target_modules"] = list(cfg.target_modules)
        # peft's default is "every target is feed-forward" when only targets are given: say none instead
        kwargs["feedforward_modules"] = list(cfg.feedforward_modules or [])
    return peft_adapters.wrap(model, IA3Config(task_type=peft_task_type(model), **kwargs), "IA3")


def save(model, path) -> None:
    from tunewright.models import peft_adapters

    peft_adapters.save(model, path)


def load(model, path) -> None:
    from tunewright.models import peft_adapters

    peft_adapters.load(model, path, what="IA3", marker=MARKER)


def merge(model):
    """Multiply the vectors into their weights -> a plain transformers model."""
    return model.merge_and_unload()


def load_for_inference(model, path, adapter_name: str = "default"):
    from tunewright.models import peft_adapters

    return peft_adapters.load_adapter(model, path, peft_type=FORMAT, what="IA3", marker=MARKER, trainable=False,
                                      field="adapter", adapter_name=adapter_name)
