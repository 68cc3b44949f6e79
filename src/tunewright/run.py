"""`train(config)`: build everything -> resume -> fit -> save, in numbered phases.

    tunewright train recipes/alpaca_lora.yaml train.max_steps=50
    >>> import tunewright; tunewright.train("recipes/alpaca_lora.yaml", ["train.max_steps=50"])
"""

from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from tunewright.config import RunConfig, dump_config, load_config
from tunewright.disk import write_text_atomic, writing
from tunewright.errors import ConfigError
from tunewright.secrets import redact, redact_tree

__all__ = ["train", "RunResult", "build"]


@dataclass
class RunResult:
    run_dir: Path
    final_dir: Path | None
    steps: int
    stopped_by: str
    metrics: dict
    best_step: int | None
    signal: int | None = None  # the signal number when stopped_by == "signal" (the CLI exits 128 + it)


def _as_config(config, overrides) -> RunConfig:
    if isinstance(config, RunConfig):
        cfg = load_config(raw=config.model_dump(), overrides=overrides) if overrides else config
    elif isinstance(config, dict):
        cfg = load_config(raw=config, overrides=overrides)
    else:
        cfg = load_config(config, overrides)
    # Write the run name into the config: the saved config.yaml must reload to the same run folder
    # (left empty, reloading it would name the run after the file, "config").
    if cfg.output.name is None:
        cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"name": cfg.run_dir().name})})
    return cfg


def _accelerator(mixed_precision: str):
    """A fresh `Accelerator` for this run.

    accelerate keeps one process-wide state and refuses a second Accelerator with another
    mixed_precision (ValueError), so a Python session that trains twice (a notebook, the tests)
    resets it first, as transformers' Trainer does; the distributed process group is kept.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if mixed_precision == "fp16" and not torch.cuda.is_available():
        # accelerate applies neither fp16 autocast nor loss scaling on the CPU: it would train in fp32
        raise ConfigError("train.mixed_precision: fp16 needs a CUDA GPU (on the CPU it would silently train in "
                          "fp32); use bf16, which CPUs with AMX or AVX512-BF16 run fast, or no")
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())


@dataclass
class Built:
    """Everything `train` and `validate` build before the loop."""

    cfg: RunConfig
    tokenizer: object
    template: str
    new_token_ids: list
    kind: str
    data: object
    model: object = None
    method: object = None
    counts: tuple = (0, 0)


def build(cfg: RunConfig, accelerator=None, with_model: bool = True) -> Built:
    """Tokenizer and template -> data -> model with the method applied."""
    from tunewright.data.pipeline import prepare_data
    from tunewright.data.templates import prepare_tokenizer, resolve_template
    from tunewright.models.load import load_model, load_tokenizer, model_kind, resize_embeddings
    from tunewright.models.methods import METHODS
    from tunewright.models.params import count_parameters
    from tunewright.models.speed import apply_speedups

    tokenizer = load_tokenizer(cfg.model)
    kind = model_kind(cfg.model)
    # a template is needed to render conversations; plain `text` rows (and seq2seq prompts) use none,
    # so a base tokenizer without a chat template trains on raw text without naming one
    sources = [*cfg.data.datasets, *cfg.data.eval_datasets]
    if kind == "seq2seq":
        unused = [k for k in ("template", "system_prompt", "train_on_inputs") if getattr(cfg.data, k)]
        if unused:
            raise ConfigError(f"data.{unused[0]}: not used by encoder-decoder models (the encoder reads the plain "
                              f"prompt, the decoder learns the reply); remove it")
    if kind == "causal_lm" and (cfg.data.template or any(s.format != "text" for s in sources)):
        template = resolve_template(cfg.data.template, tokenizer)
        new_ids = prepare_tokenizer(tokenizer, template)
    else:
        template, new_ids = cfg.data.template or "", []
    data = prepare_data(cfg, tokenizer, template, kind, accelerator)
    built = Built(cfg, tokenizer, template, list(new_ids), kind, data)
    if with_model:
        model = load_model(cfg.model, kind)
        if new_ids:
            resize_embeddings(model, tokenizer, new_ids)
        built.method = METHODS.get(cfg.method.name)
        built.model = built.method.apply(model, cfg.method, new_token_ids=new_ids)
        # after the method: adapter layers inside the blocks are patched and compiled with them
        built.model = apply_speedups(built.model, cfg.model)
        built.counts = count_parameters(built.model)
    return built


def _save_final(built: Built, out: Path, regularizers=None) -> None:
    """`final/`: the method's weights (PEFT adapter or full model), tokenizer + chat template,
    a generation_config whose EOS ids include the end-of-turn token, what base it belongs to, and
    the regularizers' state (regularizers/)."""
    from tunewright.data.templates import end_of_turn_ids
    from tunewright.models.load import base_model
    from tunewright.training.checkpoint import fsync_tree

    final, out = out, out.with_name(".tmp-" + out.name)  # written aside, renamed into place at the end
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    built.method.save(built.model, out)
    built.tokenizer.save_pretrained(out)
    gen = base_model(built.model).generation_config
    eos = end_of_turn_ids(built.tokenizer, built.template) if built.kind == "causal_lm" else [built.tokenizer.eos_token_id]
    gen.eos_token_id = sorted({i for i in eos if i is not None})
    gen.pad_token_id = built.tokenizer.pad_token_id
    gen.save_pretrained(out)
    meta = {"base_model": built.cfg.model.name, "method": built.cfg.method.name, "kind": built.kind,
            "template": built.cfg.data.template, "system_prompt": built.cfg.data.system_prompt,
            "revision": built.cfg.model.revision, "raw_text": built.template == ""}
    (out / "tunewright.json").write_text(json.dumps(redact_tree(meta), indent=1))
    if regularizers is not None:
        regularizers.save(out / "regularizers")
    fsync_tree(out)
    if final.exists():  # a crash between these two lines leaves .tmp-final complete, final/ gone
        shutil.rmtree(final)
    os.replace(out, final)


def _batches(cfg: RunConfig, built: Built, world: int, say):
    """(epoch -> micro-batches plan, collate, collated eval batches, total optimizer steps)."""
    from tunewright.data.pipeline import make_collate, make_plan

    packed = cfg.data.packing and built.kind == "causal_lm"
    plan = make_plan(built.data.train, cfg.data, cfg.train.micro_batch_size, cfg.train.seed, packed)
    collate = make_collate(built.kind, packed, built.tokenizer.pad_token_id)
    eval_mb = cfg.eval.micro_batch_size or cfg.train.micro_batch_size
    eval_batches = [collate(mb) for mb in make_plan(built.data.eval, cfg.data, eval_mb, cfg.train.seed, packed)(0)] \
        if built.data.eval else []
    if (cfg.eval.steps or cfg.eval.at_start) and not eval_batches:
        raise ConfigError("eval: evaluation is asked for (eval.steps / eval.at_start) but there is no evaluation "
                          "data; set data.val_set_size or data.eval_datasets")
    accumulation = cfg.train.batch_size // (cfg.train.micro_batch_size * world)
    per_epoch = _steps_per_epoch(plan(0), cfg.train.batch_size, accumulation * world, packed,
                                 len(built.data.train), say)
    return plan, collate, eval_batches, cfg.train.max_steps or math.ceil(cfg.train.num_epochs * per_epoch)


def _steps_per_epoch(epoch_plan: list, batch_size: int, micro_per_step: int, packed: bool, n_examples: int,
                     say) -> int:
    """Optimizer steps in an epoch of `epoch_plan` (micro-batches of rows, all ranks).

    A training set smaller than one batch is a ConfigError; the tail of an epoch's shuffle that does
    not fill a last batch is said, not dropped silently. With packing a batch counts packed rows.
    """
    from tunewright.training.loop import steps_per_epoch

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


def train(config, overrides: list[str] | None = None) -> RunResult:
    """Run a fine-tune described by a YAML path, a dict or a RunConfig (+ dotted overrides)."""
    from tunewright.training.run_folder import RunLock

    cfg = _as_config(config, overrides)
    acc = _accelerator(cfg.train.mixed_precision)

    def say(*parts) -> None:  # console lines name files and models: never print a credential in them
        acc.print(*(redact(str(p)) for p in parts))

    run_dir = cfg.run_dir()
    # the run folder has one owner (the main process holds its lock), and a full or read-only disk
    # anywhere in the run ends it with one line naming the file
    with writing(run_dir, "write", "what was saved before is intact; free space or fix permissions, then resume "
                 "with train.resume=auto"):
        with RunLock(run_dir, say) if acc.is_main_process else nullcontext():
            return _train(cfg, acc, run_dir, say)


def _train(cfg: RunConfig, acc, run_dir: Path, say) -> RunResult:
    import torch

    from tunewright.eval.during_training import metric_evaluator
    from tunewright.models.params import format_counts
    from tunewright.models.speed import forward_context
    from tunewright.objectives import resolve_objective
    from tunewright.regularizers.hook import setup_regularizers
    from tunewright.training.checkpoint import prune_checkpoints, read_trainer_state, save_checkpoint
    from tunewright.training.logging import MetricsLog, Progress
    from tunewright.training.loop import LoopParts, fit
    from tunewright.training.optim import build_optimizer, build_scheduler
    from tunewright.training.resume import (check_resume_key, data_digest, forget_after, resolve_resume, restore,
                                            resume_key, schedule_record)
    from tunewright.training.run_folder import prepare_run_dir

    torch.manual_seed(cfg.train.seed)
    resume_from = resolve_resume(cfg, run_dir, say)
    if acc.is_main_process:
        prepare_run_dir(run_dir, cfg.output.overwrite, resuming=bool(cfg.train.resume))
    acc.wait_for_everyone()

    # 1. build: tokenizer, data, model + method, objective, optimizer
    world = acc.num_processes
    if cfg.train.batch_size % (cfg.train.micro_batch_size * world):
        raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) must be a multiple of micro_batch_size x "
                          f"processes ({cfg.train.micro_batch_size} x {world})")
    built = build(cfg, acc)
    for line in built.data.report:
        say(line)
    say(format_counts(*built.counts))
    objective = resolve_objective(cfg.objective.name, built.kind)
    plan, collate, eval_batches, total_steps = _batches(cfg, built, world, say)
    model = acc.prepare(built.model)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, total_steps)
    # after `prepare`: DDP has made every rank's weights the same (L2-SP's θ0 is taken from them)
    regularizers = setup_regularizers(cfg.regularizers, acc.unwrap_model(model), run_dir)

    def save_weights(path: Path) -> None:  # the method's weights, and the regularizers' state beside them
        built.method.save(acc.unwrap_model(model), path)
        if regularizers is not None:
            regularizers.save(path / "regularizers")

    def load_weights(path: Path) -> None:
        built.method.load(acc.unwrap_model(model), path)
        if regularizers is not None:
            regularizers.load(path / "regularizers")

    # 2. resume: refuse changed settings, then weights through the method, optimizer, scheduler,
    #    RNG and data position; honoured changes (lr, total steps) are applied and said
    ckpt_root = run_dir / "checkpoints"
    key = resume_key(cfg, world, data_digest(built.data.train))
    start_state = None
    if resume_from is not None:
        check_resume_key(read_trainer_state(resume_from).get("resume_key"), key, resume_from)
        start_state = restore(resume_from, cfg, load_weights, optimizer, scheduler, total_steps, say)
        say(f"resumed from {resume_from} at step {start_state['step']}")
        if acc.is_main_process:
            forget_after(run_dir, start_state["step"], say)
    elif cfg.train.resume and acc.is_main_process and (run_dir / "metrics.jsonl").exists():
        # resume=auto found no usable checkpoint: training restarts at step 0, and the lines of the
        # attempt that saved nothing would otherwise repeat those steps in metrics.jsonl
        say(f"train.resume: no complete checkpoint in {ckpt_root}; starting at step 0")
        (run_dir / "metrics.jsonl").unlink()
    if acc.is_main_process:  # only now: the settings in use, after a resume has accepted them
        with writing(run_dir / "config.yaml", "write the run's config"):
            write_text_atomic(run_dir / "config.yaml", dump_config(cfg))

    # 3. fit
    log = MetricsLog(run_dir, cfg.train.report_to, cfg.output.name or "run", enabled=acc.is_main_process,
                     start_step=start_state["step"] if start_state else 0)
    schedule = schedule_record(cfg, total_steps)

    def save(step: int, state: dict) -> None:
        if acc.is_main_process:
            save_checkpoint(ckpt_root, step, save_weights=save_weights, optimizer=optimizer, scheduler=scheduler,
                            trainer_state={**state, "resume_key": key, "schedule": schedule},
                            tokenizer=built.tokenizer)
            prune_checkpoints(ckpt_root, cfg.output.save_total_limit, state.get("best_step"))
        acc.wait_for_everyone()

    progress = Progress(total_steps, start_state["step"] if start_state else 0, enabled=acc.is_main_process)
    parts = LoopParts(model=model, objective=objective, objective_cfg=cfg.objective, optimizer=optimizer,
                      scheduler=scheduler, accelerator=acc, plan=plan, collate=collate, eval_batches=eval_batches,
                      evaluate_metrics=metric_evaluator(cfg, built, built.data.eval_examples),
                      save=save, log=log.log, progress=progress, forward_context=forward_context(cfg.model),
                      regularizers=regularizers)
    try:
        result = fit(parts, cfg.train, cfg.eval, total_steps, cfg.output.save_steps, start_state)
    finally:  # a failed save or a user error must not leave a half-drawn bar or an open event file
        progress.close()
        log.close()

    # 4. save
    final = None
    if acc.is_main_process and result.stopped_by != "signal":
        built.model = acc.unwrap_model(model)
        if regularizers is not None:  # EWC's Fisher, MAS's importances: one pass per member over the training data
            regularizers.finish(built.model, lambda: (collate(rows) for rows in plan(0)))
        final = run_dir / "final"
        with writing(final, "save final/", "the checkpoints are intact; free space, then resume with "
                     "train.resume=auto to write final/"):
            _save_final(built, final, regularizers)
            if eval_batches:  # report.md, results.json and curves from metrics.jsonl
                from tunewright.eval.report import write_run_report
                write_run_report(run_dir)
    acc.wait_for_everyone()
    if result.stopped_by == "signal":
        import signal
        name = signal.Signals(result.signal).name if result.signal else "a signal"
        saved = "checkpoint saved, no final/ yet" if result.step else "nothing trained yet"
        say(f"stopped by {name} at step {result.step}; {saved}; continue with train.resume=auto")
    else:
        say(f"done: {result.step} steps ({result.stopped_by}); loss {result.last_metrics.get('loss', float('nan')):.4f}"
            + (f"; saved {final}" if final else ""))
    return RunResult(run_dir, final, result.step, result.stopped_by, result.last_metrics, result.best_step,
                     result.signal)
