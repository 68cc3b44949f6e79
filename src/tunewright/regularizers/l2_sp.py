"""L2-SP: an L2 pull of the trainable parameters toward their values at the start of the run.

    penalty = weight / 2 · Σ_i ‖θ_i − θ0_i‖²        over the trainable parameters θ_i
    ∂penalty/∂θ_i = weight · (θ_i − θ0_i)

Li, Grandvalet and Davoine (2018), "Explicit inductive bias for transfer learning with
convolutional networks" (ICML). Weight decay pulls toward zero, which for a fine-tune means away
from what pretraining learned; L2-SP pulls toward the starting point instead. With LoRA the
trainable parameters are the adapter's, so it pulls the adapter toward its initialisation (B = 0:
the base model unchanged).

Memory: θ0 is one more copy of every trainable parameter (for full fine-tuning, of the whole
model), kept on its device and saved with the state, so a resumed run pulls toward the same θ0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunewright.sections import Section

__all__ = ["Config", "setup", "penalty"]


class Config(Section):
    name: Literal["l2_sp"] = Field("l2_sp", description="L2-SP: pull the trainable weights toward their starting values.")
    weight: float = Field(0.01, ge=0, description=(
        "Strength λ of the penalty λ/2·Σ‖θ−θ0‖², added once per optimizer step (independent of the batch "
        "size, accumulation and process count)."))


def setup(model, run_dir, cfg: Config) -> dict:
    """θ0: a copy of each trainable parameter as it is now (after the method is applied)."""
    theta0 = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return {"weight": cfg.weight, "theta0": theta0}


def penalty(model, state: dict):
    """(weight/2 · Σ‖θ−θ0‖² as a float32 scalar, {"distance": ‖θ−θ0‖ over all of them})."""
    params = dict(model.named_parameters())
    # summed in float32 whatever the parameters' dtype: a bf16 difference would round away the
    # small steps this penalty exists to measure
    squared = sum((params[name].float() - start.float()).pow(2).sum() for name, start in state["theta0"].items())
    return state["weight"] / 2 * squared, {"distance": squared.detach().sqrt()}
