"""Regularizers: a penalty on the weights added once per optimizer step (continual learning's EWC,
SI, MAS; L2-SP toward the starting weights), keyed by the `regularizers[].name` users write in YAML.

    regularizers:
      - {name: l2_sp, weight: 0.01}

Every regularizer is a module with the same surface (no classes to inherit from), `Regularizer`
below. What the loop guarantees (regularizers/hook.py, training/loop.py):

  - `penalty` is called exactly once per optimizer step, after every micro-batch's backward (and
    DDP's gradient all-reduce); its gradient is added to the parameters' `.grad` as it is: not
    divided by the target-token count, not summed per micro-batch, not summed over ranks (each rank
    computes the same value on the same weights). The strength therefore does not depend on the
    batch size, the accumulation or the number of processes. Clipping and the optimizer see the sum.
  - `after_step` runs after each optimizer step that updated the weights, before the gradients are
    zeroed: `.grad` still holds the gradient that step used (clipped, the penalty's included).
  - `finish` runs once at the end of a run that completed (not one stopped by a signal), on the main
    process, before final/ is written, with the unwrapped model (no DDP: no collectives). It is given
    the training rows one per batch, in the seeded order of epoch 0, and `loss(model, batch)`, the
    run's objective loss of a batch summed over its units (one row's: its negative log-likelihood).
    Why both: EWC's Fisher and MAS's importances are means over *per-sample* squared or absolute
    gradients, which a micro-batch's summed gradient cannot give (the mean of squares is not the
    square of the mean), and the regularizer must not know which objective made the loss.
  - the state is saved in every checkpoint and in final/ (`regularizers/<name>.safetensors` for its
    tensors, `regularizers/<name>.json` for the rest; never pickle) and restored on resume, so a
    resumed run continues with the same state. A regularizer's config is part of the resume key.

A regularizer that carries its state from one task of a sequence to the next (EWC's Fisher, SI's
and MAS's importances, the anchor θ*) reads the previous task's saved state with
`state.read_state(folder, name)` in its `setup`, from the folder its config's `previous` names.

The logged `loss` is the objective's loss alone (comparable with `eval_loss` and across runs with
and without regularizers); each penalty is logged beside it as `reg_<name>`, its metrics as
`reg_<name>_<key>`. The optimizer minimizes `loss` + the sum of the `reg_<name>` values.

A new regularizer is one file here, one line in `REGULARIZERS` below and one test file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from tunewright.regularizers import ewc, l2_sp, mas, si
from tunewright.registry import Configs, Registry

__all__ = ["REGULARIZERS", "REGULARIZER_CONFIGS", "Regularizer"]


class Regularizer(Protocol):
    """The surface of a regularizer module. `state` is a dict whose values are tensors, dicts of
    tensors (keyed by parameter name, say) or JSON values; the hook saves and restores it."""

    Config: type  # a tunewright.sections.Section with `name: Literal[...]` and a strength field

    def setup(self, model, run_dir: Path, cfg) -> dict[str, Any]:
        """The state at the start of a run (copies what `penalty` needs from `cfg` into it). On a
        resume the state saved in the checkpoint replaces what this returns."""

    def penalty(self, model, state: dict) -> tuple[Any, dict]:
        """(scalar tensor with a graph to the trainable parameters, {metric: value}) for this step."""

    # optional:
    def after_step(self, model, state: dict) -> None:
        """After the optimizer step, before zero_grad: `p.grad` and the new `p` are both there."""

    def finish(self, model, batches: Iterator[dict], state: dict, loss: Callable[[Any, dict], Any]) -> None:
        """At the end of a run: `batches` the training rows one per collated batch, on the model's
        device; `loss(model, batch)` the objective's summed loss (a 0-dim tensor with a graph)."""


REGULARIZERS: Registry = Registry("regularizer")
REGULARIZERS.register("l2_sp", l2_sp)
REGULARIZERS.register("ewc", ewc)
REGULARIZERS.register("si", si)
REGULARIZERS.register("mas", mas)

REGULARIZER_CONFIGS = Configs(REGULARIZERS)  # name -> Config, live (plug-ins add to it)
