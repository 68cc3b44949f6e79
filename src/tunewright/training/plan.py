"""The step plan of a run: which rows each optimizer step trains on, and how many steps there are.

    plan(epoch)     the epoch's micro-batches (all ranks; each rank takes its slice in the loop),
                    seeded, grouped by length or packed as data settings ask
    collate(rows)   a micro-batch -> tensors, the objective's way
    eval_batches    the evaluation rows, collated once
    total_steps     train.max_steps, or num_epochs x the optimizer steps an epoch holds (x the
                    objective's steps_per_batch)

A training set smaller than one batch is an error; an epoch's tail that does not fill a last batch
is said, not dropped silently. With packing a batch counts packed rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from tunewright.data.pipeline import make_plan
from tunewright.errors import ConfigError
from tunewright.objectives import steps_per_batch
from tunewright.training.loop import steps_per_epoch

__all__ = ["StepPlan", "plan_steps"]


@dataclass
class StepPlan:
    plan: Callable[[int], list]  # epoch -> micro-batches (rows of Encoded)
    collate: Callable[[list], dict]
    eval_batches: list
    total_steps: int
    steps_per_batch: int = 1  # optimizer steps each plan batch feeds (rollout objectives: several)


def plan_steps(cfg, data, objective, pad_id: int, world: int, say) -> StepPlan:
    """The StepPlan of `cfg` (a RunConfig) over `data` (PreparedData) for `objective`."""
    packed = cfg.data.packing and objective.PACKABLE
    plan = make_plan(data.train, cfg.data, cfg.train.micro_batch_size, cfg.train.seed, packed)

    def collate(rows: list) -> dict:
        return objective.collate(rows, pad_id, packed)

    eval_mb = cfg.eval.micro_batch_size or cfg.train.micro_batch_size
    eval_batches = [collate(mb) for mb in make_plan(data.eval, cfg.data, eval_mb, cfg.train.seed, packed)(0)] \
        if data.eval else []
    if (cfg.eval.steps or cfg.eval.at_start) and not eval_batches:
        raise ConfigError("eval: evaluation is asked for (eval.steps / eval.at_start) but there is no evaluation "
                          "data; set data.val_set_size or data.eval_datasets")
    accumulation = cfg.train.batch_size // (cfg.train.micro_batch_size * world)
    per_epoch = _per_epoch(plan(0), cfg.train.batch_size, accumulation * world, packed, len(data.train), say)
    # a rollout objective trains steps_per_batch optimizer steps on each batch of prompts
    repeat = steps_per_batch(objective, cfg.objective)
    total = cfg.train.max_steps or math.ceil(cfg.train.num_epochs * per_epoch * repeat)
    return StepPlan(plan, collate, eval_batches, total, repeat)


def _per_epoch(epoch_plan: list, batch_size: int, micro_per_step: int, packed: bool, n_examples: int, say) -> int:
    """Optimizer steps in an epoch of `epoch_plan` (micro-batches of rows, all ranks)."""
    units = "packed rows" if packed else "examples"
    n_units = sum(len(mb) for mb in epoch_plan)
    if n_units < batch_size:
        rows = f" ({n_examples} examples packed into {n_units} rows)" if packed else ""
        raise ConfigError(f"train.batch_size: {batch_size} is larger than the training set: {n_units} {units} "
                          f"after filtering{rows}; lower train.batch_size or add data")
    per_epoch = steps_per_epoch(len(epoch_plan), micro_per_step, 1)
    left = n_units - sum(len(mb) for mb in epoch_plan[:per_epoch * micro_per_step])
    if left:
        say(f"each epoch: {per_epoch} steps; {left} of {n_units} {units} do not fill a last batch and are left "
            f"out of that epoch (a different tail each epoch)")
    return per_epoch
