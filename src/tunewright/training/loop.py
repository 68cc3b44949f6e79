"""The training loop: one loop for every method and objective, read top to bottom.

Per optimizer step:
  1. take this step's micro-batches (global batch = micro_batch_size x accumulation x world size);
     an objective that learns from the model's own samples turns them into what the step trains on
     (`refresh`: PPO samples a rollout from their prompts and returns its next minibatch; it gives
     each plan batch to `steps_per_batch` consecutive steps)
  2. count target tokens over the whole accumulated global batch (all ranks)
  3. forward/backward each micro-batch; loss = summed token loss / that count, so 4 micro-batches
     of 2 give the same update as one batch of 8 whatever the sequence lengths. The forward runs
     inside `forward_context` (activation offloading, models/speed.py); the loss stays on the
     device until the step ends (read once per step, not per micro-batch); then the regularizers'
     penalty gradient, once per step (regularizers/__init__.py says what is guaranteed)
  4. clip, step, schedule (the regularizers' `after_step` between the step and zero_grad)
  5. log; evaluate (early stopping, best checkpoint); checkpoint; stop on SIGTERM/SIGINT at this
     step boundary (training/stop.py: an evaluation under way is abandoned, not waited for)

It never looks at the method, objective or regularizers by name: the objective supplies `loss`,
`count` (the unit the step normalizes by: target tokens, pairs, rows) and the metrics it declares
(logged as `<name>` in training and `eval_<name>` in evaluation; metrics over all evaluation rows,
such as AUC, from its OUTPUTS and `eval_metrics`), the method is already applied to
the model, the regularizers come as one object with `add_penalty` and `after_step`, and saving goes
through a callback.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import torch

from tunewright.errors import TunewrightError
from tunewright.training import stop

__all__ = ["LoopParts", "LoopResult", "fit", "evaluate_loss", "steps_per_epoch"]


@dataclass
class LoopParts:
    """Everything the loop needs, built by `run.py`."""

    model: torch.nn.Module
    objective: object  # an objective module (objectives/__init__.py): loss, count, UNIT, METRICS
    objective_cfg: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    accelerator: object  # accelerate.Accelerator
    plan: Callable[[int], list]  # epoch -> global list of micro-batches (rows of example indices)
    collate: Callable[[list], dict]  # one micro-batch -> tensors
    eval_batches: list = field(default_factory=list)  # collated evaluation micro-batches (all ranks)
    save: Callable[[int, dict], None] | None = None  # (step, trainer_state) -> writes a checkpoint
    log: Callable[[int, dict], None] | None = None  # (step, metrics) -> metrics sinks
    progress: object | None = None
    evaluate_metrics: Callable[[torch.nn.Module], dict] | None = None  # model -> {"eval_<key>": value}
    # entered around each training forward, e.g. activation offloading (models/speed.forward_context)
    forward_context: Callable[[], ContextManager] = nullcontext
    objective_state: object = None  # what objective.setup returned (a frozen reference, ...), passed to loss
    # regularizers/hook.Regularizers, or None: add_penalty(model) -> (penalty, metrics), after_step(model)
    regularizers: object | None = None
    steps_per_batch: int = 1  # optimizer steps given to each plan batch (objectives.steps_per_batch)


@dataclass
class LoopResult:
    step: int
    stopped_by: str  # "max_steps" | "early_stopping" | "signal"
    best_metric: float | None
    best_step: int | None
    last_metrics: dict
    signal: int | None = None  # the stop signal's number when stopped_by == "signal"


def steps_per_epoch(n_micro_batches: int, accumulation: int, world: int) -> int:
    return n_micro_batches // (accumulation * world)


def _real_tokens(batch: dict) -> int:
    """Tokens that are not padding, for throughput: objectives' collate says (`num_tokens`); a bare
    padded batch has an attention mask."""
    if "num_tokens" in batch:
        return int(batch["num_tokens"])
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0


def _add_metrics(objective, sums: dict, metrics: dict) -> None:
    """Add one micro-batch's declared metrics (device tensors, sums over its units) to `sums`."""
    for name in objective.METRICS:
        if name not in metrics:
            raise TunewrightError(f"objective: its loss declares metric {name!r} (METRICS) but did not return it")
        sums[name] = sums[name] + metrics[name].detach() if name in sums else metrics[name].detach()


def _reduce_metrics(objective, sums: dict, count: float, acc, prefix: str = "") -> dict:
    """The step's (or evaluation's) metrics: summed over ranks, "mean" ones divided by the count."""
    if not objective.METRICS:
        return {}
    values = torch.stack([torch.as_tensor(sums[name], device=acc.device).double().reshape(()) for name in
                          objective.METRICS])
    if acc.num_processes > 1:
        values = acc.reduce(values, reduction="sum")
    return {prefix + name: float(v) / (max(count, 1.0) if how == "mean" else 1.0)
            for (name, how), v in zip(objective.METRICS.items(), values.tolist())}


def _keep_outputs(objective, kept: dict, metrics: dict) -> None:
    """Keep one evaluation batch's per-row OUTPUTS (on the host) for the objective's eval_metrics."""
    for name in getattr(objective, "OUTPUTS", ()):
        if name not in metrics:
            raise TunewrightError(f"objective: its loss declares output {name!r} (OUTPUTS) but did not return it")
        kept.setdefault(name, []).append(metrics[name].detach().cpu())


def _row_metrics(objective, kept: dict, cfg, acc, prefix: str = "eval_") -> dict:
    """The objective's metrics over every evaluation row of every rank (eval_metrics over OUTPUTS)."""
    if not getattr(objective, "OUTPUTS", ()):
        return {}
    rows = {name: torch.cat(parts) for name, parts in kept.items()}
    if acc.num_processes > 1:  # each rank scored its slice: every rank computes over all of them
        from accelerate.utils import gather_object
        gathered = gather_object([rows])
        rows = {name: torch.cat([r[name] for r in gathered if name in r]) for name in objective.OUTPUTS}
    return {prefix + k: float(v) for k, v in objective.eval_metrics(rows, cfg).items()}


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def evaluate_loss(parts: LoopParts) -> dict:
    """The loss per unit over the evaluation batches (summed over ranks), the objective's metrics as
    eval_<name>, the unit count as eval_<unit>, and perplexity for token objectives."""
    acc, model, objective = parts.accelerator, parts.model, parts.objective
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=acc.device)  # [loss sum, units]
    sums: dict = {}
    kept: dict = {}  # per-row OUTPUTS, for metrics that are not sums (AUC)
    with torch.no_grad():
        for batch in parts.eval_batches[acc.process_index::acc.num_processes]:
            if acc.num_processes == 1:  # with several ranks, one leaving early would hang the reduce
                stop.check()
            batch = _to_device(batch, acc.device)
            with acc.autocast():
                loss_sum, metrics = objective.loss(model, batch, parts.objective_cfg, parts.objective_state)
            _add_metrics(objective, sums, metrics)
            _keep_outputs(objective, kept, metrics)
            total += torch.tensor([float(loss_sum), objective.count(batch)], dtype=torch.float64, device=acc.device)
    total = acc.reduce(total, reduction="sum") if acc.num_processes > 1 else total
    model.train(was_training)
    loss = float(total[0] / total[1].clamp(min=1))
    out = {"eval_loss": loss, **_reduce_metrics(objective, sums, float(total[1]), acc, "eval_"),
           **_row_metrics(objective, kept, parts.objective_cfg, acc), f"eval_{objective.UNIT}": int(total[1])}
    if objective.UNIT == "tokens":
        out["eval_perplexity"] = math.exp(min(loss, 50.0))
    return out


def _more_metrics(parts: LoopParts) -> dict:
    """Generation/scoring metrics: computed on the main process (greedy decoding is deterministic;
    repeating it on every rank would only cost time), then shared so every rank decides alike."""
    if parts.evaluate_metrics is None:
        return {}
    acc = parts.accelerator
    model = acc.unwrap_model(parts.model)
    was_training = model.training
    result = [None]
    if acc.is_main_process:
        try:
            result = [parts.evaluate_metrics(model)]
        except stop.StopRequested:  # generation abandoned: the other ranks learn it from the None
            pass
    model.train(was_training)
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        broadcast_object_list(result)
    if result[0] is None:
        raise stop.StopRequested("evaluation abandoned")
    return result[0]


def _nan_advice(train_cfg, skips: int) -> str:
    if train_cfg.nan_policy == "stop":
        return ("stopped (train.nan_policy: stop); lower train.learning_rate, check the data, or set "
                "train.nan_policy: skip to skip such batches")
    return f"{skips} batches skipped, more than train.max_nan_skips={train_cfg.max_nan_skips}; lower train.learning_rate"


class _explain_out_of_memory:
    """Turn an out-of-memory error into one line naming the step, the batch shape and the knobs
    that lower memory, instead of a CUDA traceback."""

    def __init__(self, step: int, batch: dict):
        largest = max((v for v in batch.values() if torch.is_tensor(v)), key=lambda t: t.numel(), default=None)
        self.step, self.shape = step, tuple(largest.shape) if largest is not None else ()

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is not None and issubclass(kind, torch.OutOfMemoryError):
            raise TunewrightError(
                f"step {self.step}: out of memory on a micro-batch of shape {list(self.shape)} (rows x tokens); "
                f"lower train.micro_batch_size (keep train.batch_size: accumulation makes up the rest), "
                f"lower data.cutoff_len, set model.gradient_checkpointing: true, data.packing: true, "
                f"train.mixed_precision: bf16, or use method.name: lora instead of full") from None
        return False


def _any_rank(flag: bool, acc) -> bool:
    """True when `flag` holds on any process: a SIGTERM delivered to one rank must stop them all at
    the same step, or the others wait forever in the next step's gradient all-reduce."""
    if acc.num_processes == 1:
        return flag
    return bool(acc.reduce(torch.tensor([float(flag)], device=acc.device), reduction="sum")[0] > 0)


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def fit(parts: LoopParts, train_cfg, eval_cfg, total_steps: int, save_steps: int | None = None,
        start_state: dict | None = None) -> LoopResult:
    """Train until `total_steps` (or early stopping / a signal); checkpoint every `save_steps`."""
    acc, model, opt = parts.accelerator, parts.model, parts.optimizer
    world, rank = acc.num_processes, acc.process_index
    accumulation = train_cfg.batch_size // (train_cfg.micro_batch_size * world)
    per_epoch = steps_per_epoch(len(parts.plan(0)), accumulation, world)  # plans are equally long per epoch
    # optional objective hooks (objectives/__init__.py): rollout objectives train several steps on a
    # plan batch (the plan's steps_per_batch, which its total_steps counted too), and refresh it
    objective, objective_cfg = parts.objective, parts.objective_cfg
    repeat = parts.steps_per_batch
    refresh = getattr(objective, "refresh", None)
    state = dict(start_state or {"step": 0, "best_metric": None, "best_step": None, "bad_evals": 0})
    step = state["step"]
    plan_epoch, plan = None, []
    early = eval_cfg.early_stopping
    last_metrics: dict = {}
    stopped_by = "max_steps"

    def run_eval(at_step: int) -> dict | None:
        """The evaluation's metrics, logged; None when a stop signal abandoned it."""
        try:
            metrics = {**evaluate_loss(parts), **_more_metrics(parts)}
        except stop.StopRequested:
            return None
        for watched in {eval_cfg.best_metric, *([early.metric] if early else [])} - set(metrics):
            raise TunewrightError(f"eval: metric {watched!r} is not produced by this evaluation; it gives "
                                  f"{', '.join(sorted(k for k in metrics if k != 'eval_tokens'))}")
        if parts.log:
            parts.log(at_step, metrics)
        if parts.progress:
            parts.progress.write(f"step {at_step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        return metrics

    with stop.listen():
        if step == 0 and eval_cfg.at_start and parts.eval_batches and run_eval(0) is None:
            return LoopResult(step=0, stopped_by="signal", best_metric=None, best_step=None, last_metrics={},
                              signal=stop.requested())
        model.train()
        while step < total_steps:
            # 1. this step's micro-batches: the epoch plan is global; each rank takes its slice
            epoch, index = divmod(step // repeat, per_epoch)
            if epoch != plan_epoch:
                plan, plan_epoch = parts.plan(epoch), epoch
            first = (index * world + rank) * accumulation
            on_host = [parts.collate(rows) for rows in plan[first:first + accumulation]]
            if refresh is not None:  # under the loss's autocast: the rollout's log-probs are the loss's own at ratio 1
                with acc.autocast():
                    on_host = refresh(acc.unwrap_model(model), step, on_host, objective_cfg, parts.objective_state)

            # 2. target tokens in the whole accumulated global batch, counted on the host copies
            #    (counting on the device would wait for the GPU twice per micro-batch)
            counts = torch.tensor([sum(parts.objective.count(b) for b in on_host),
                                   sum(_real_tokens(b) for b in on_host)], dtype=torch.float64)
            if world > 1:
                counts = acc.reduce(counts.to(acc.device), reduction="sum")
            n_targets, n_tokens = float(counts[0]), int(counts[1])
            if n_targets == 0:
                raise TunewrightError(f"step {step + 1}: the batch has no target {parts.objective.UNIT} "
                                      f"(every label is masked)")
            micro = [_to_device(b, acc.device) for b in on_host]

            # 3. forward/backward; DDP averages gradients over ranks, hence the factor `world`.
            #    The step's loss is summed on the device and read once per step: reading it per
            #    micro-batch would stall the GPU queue each time (a device->host sync).
            t0 = time.perf_counter()  # step_time: forward, backward, clip and optimizer step
            loss_total = torch.zeros((), dtype=torch.float64, device=acc.device)
            sums: dict = {}  # the objective's declared metrics, summed over micro-batches
            for i, batch in enumerate(micro):
                # gradients are all-reduced once, after the last micro-batch of the step
                sync = acc.no_sync(model) if i < len(micro) - 1 and world > 1 else nullcontext()
                with sync, _explain_out_of_memory(step + 1, batch):
                    with acc.autocast(), parts.forward_context():
                        loss_sum, batch_metrics = parts.objective.loss(model, batch, parts.objective_cfg,
                                                                       parts.objective_state)
                    acc.backward(loss_sum * (world / n_targets))
                loss_total += loss_sum.detach()
                _add_metrics(parts.objective, sums, batch_metrics)
            if world > 1:
                loss_total = acc.reduce(loss_total, reduction="sum")
            step_loss = float(loss_total) / n_targets
            # the regularizers' penalty, once per step: its gradient joins the all-reduced one as it is,
            # so it is not divided by n_targets, not summed per micro-batch, and not summed over ranks
            # (every rank adds the same value, computed on the same weights)
            penalty, reg_metrics = 0.0, {}
            if parts.regularizers is not None:
                penalty, reg_metrics = parts.regularizers.add_penalty(acc.unwrap_model(model))
            where = f"epoch {epoch}, micro-batches {first}..{first + accumulation - 1}"
            skip_update = not (math.isfinite(step_loss) and math.isfinite(penalty))
            if skip_update:
                bad = f"loss is {step_loss}" if not math.isfinite(step_loss) else f"regularizer penalty is {penalty}"
                state["nan_skips"] = state.get("nan_skips", 0) + 1
                if train_cfg.nan_policy == "stop" or state["nan_skips"] > train_cfg.max_nan_skips:
                    raise TunewrightError(f"step {step + 1}: {bad} ({where}); "
                                          f"{_nan_advice(train_cfg, state['nan_skips'])}")
                if parts.progress:
                    parts.progress.write(f"step {step + 1}: {bad} ({where}); batch skipped "
                                         f"({state['nan_skips']} of at most {train_cfg.max_nan_skips})")

            # 4. clip, step, schedule (a skipped batch moves the schedule and data on, not the weights)
            grad_norm = None
            if train_cfg.max_grad_norm and not skip_update:
                grad_norm = float(acc.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                                      train_cfg.max_grad_norm))
            lr = opt.param_groups[0]["lr"]
            if not skip_update:
                opt.step()
                if parts.regularizers is not None:  # before zero_grad: SI needs the gradient and the update
                    parts.regularizers.after_step(acc.unwrap_model(model))
            parts.scheduler.step()
            opt.zero_grad(set_to_none=True)
            if acc.device.type == "cuda":  # CUDA runs asynchronously: wait for the optimizer step to finish
                torch.cuda.synchronize(acc.device)
            step_time = time.perf_counter() - t0
            step += 1
            state["step"] = step

            # 5. log, evaluate, checkpoint, stop
            metrics = {"loss": step_loss, "lr": lr, "epoch": round(step / (per_epoch * repeat), 4), "tokens": n_tokens,
                       f"target_{parts.objective.UNIT}": int(n_targets), "step_time": round(step_time, 4),
                       **_reduce_metrics(parts.objective, sums, n_targets, acc)}
            if grad_norm is not None:
                metrics["grad_norm"] = grad_norm
            metrics.update(reg_metrics)  # reg_<name>: not in `loss`, which stays the objective's
            if parts.progress:
                metrics["tokens_per_s"] = round(parts.progress.update(metrics, n_tokens), 1)
            last_metrics = metrics
            if parts.log and (step % train_cfg.logging_steps == 0 or step == total_steps):
                parts.log(step, metrics)

            stop_now = False
            evaluated = None
            if parts.eval_batches and eval_cfg.steps and (step % eval_cfg.steps == 0 or step == total_steps):
                evaluated = run_eval(step)
            if evaluated:  # (None: a stop signal abandoned it; the checkpoint below is of this step)
                last_metrics = {**metrics, **evaluated}
                watched = evaluated.get(eval_cfg.best_metric)
                if watched is not None and _improved(watched, state["best_metric"], eval_cfg.best_mode, 0.0):
                    state["best_metric"], state["best_step"] = watched, step
                if early and early.metric in evaluated:
                    if _improved(evaluated[early.metric], state.get("early_best"), early.mode, early.min_delta):
                        state["early_best"], state["bad_evals"] = evaluated[early.metric], 0
                    else:
                        state["bad_evals"] += 1
                        stop_now = state["bad_evals"] >= early.patience
                        stopped_by = "early_stopping" if stop_now else stopped_by
            if _any_rank(stop.requested() is not None, acc):  # every rank stops at the same step
                stop_now, stopped_by = True, "signal"
            # a new best is saved when checkpoints are kept (else the best is never among them) and when
            # final/ will be loaded from it (eval.load_best)
            new_best = state["best_step"] == step and (save_steps or eval_cfg.load_best)
            if parts.save and (stop_now or step == total_steps or new_best or (save_steps and step % save_steps == 0)):
                parts.save(step, dict(state))
            if stop_now:
                break
    return LoopResult(step=step, stopped_by=stopped_by, best_metric=state["best_metric"],
                      best_step=state["best_step"], last_metrics=last_metrics,
                      signal=stop.requested() if stopped_by == "signal" else None)
