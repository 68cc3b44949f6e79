"""LoRA (Hu et al. 2021) through peft: W' = W + (alpha / r) * B @ A, B zero-initialised, so
training starts from the base model; rsLoRA scales by alpha / sqrt(r) (Kalajdzievski 2023); DoRA
(Liu et al. 2024) splits W into magnitude and direction. Saves a PEFT-format adapter."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge"]


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


def apply(model, cfg: Config):
    raise NotImplementedError


def save(model, path) -> None:
    raise NotImplementedError


def load(model, path) -> None:
    raise NotImplementedError


def merge(model):
    raise NotImplementedError
