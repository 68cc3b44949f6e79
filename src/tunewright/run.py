"""`train(config)`: a run's story, in numbered phases: build -> resume -> fit -> save.

    tunewright train recipes/alpaca_lora.yaml train.max_steps=50
    >>> import tunewright; tunewright.train("recipes/alpaca_lora.yaml", ["train.max_steps=50"])

Each phase's detail lives in a room named for it: the run folder (training/run_folder.py), the
step plan (training/plan.py), resuming (training/resume.py), the loop (training/loop.py) and
final/ (training/final.py). What is learned is the objective's (objectives/), which parameters
train the method's (models/methods/).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from tunewright.config import RunConfig, as_run_config, dump_config
from tunewright.disk import write_text_atomic, writing
from tunewright.errors import ConfigError
from tunewright.secrets import redact

__all__ = ["train", "RunResult", "build", "Built", "resolve_run_precision"]


@dataclass
class RunResult:
    run_dir: Path
    final_dir: Path | None
    steps: int
    stopped_by: str
    metrics: dict
    best_step: int | None
    signal: int | None = None  # the signal number when stopped_by == "signal" (the CLI exits 128 + it)


@dataclass
class Built:
    """Everything `train`, `validate` and `verify` build before the loop."""

    cfg: RunConfig
    tokenizer: object
    template: str
    new_token_ids: list
    objective: object  # the objective module (objectives/__init__.py)
    objective_cfg: object  # its Config (`auto` resolved)
    data: object  # data.pipeline.PreparedData
    model: object = None
    method: object = None
    counts: tuple = (0, 0)
    model_settings: dict | None = None  # model.layers' block count, the objective's model_config: set at load


def build(cfg: RunConfig, accelerator=None, with_model: bool = True) -> Built:
    """Objective -> tokenizer and template -> data -> model (the objective's head) + method."""
    from tunewright.data.pipeline import prepare_data
    from tunewright.data.templates import prepare_tokenizer, resolve_template
    from tunewright.models.load import layer_settings, load_model, load_tokenizer, model_head, resize_embeddings
    from tunewright.models.methods import METHODS
    from tunewright.models.params import count_parameters
    from tunewright.models.speed import apply_speedups
    from tunewright.objectives import check_fit, fit_data, model_config, resolve_objective
    from tunewright.objectives import prepare_tokenizer as objective_tokens

    objective, objective_cfg = resolve_objective(cfg.objective, model_head(cfg.model))
    check_fit(objective, cfg)
    tokenizer = load_tokenizer(cfg.model)
    # a template renders conversations; plain `text` rows use none, so a base tokenizer without a
    # chat template trains on raw text without naming one
    sources = [*cfg.data.datasets, *cfg.data.eval_datasets]
    if objective.TEMPLATED and (cfg.data.template or any(s.format != "text" for s in sources)):
        template = resolve_template(cfg.data.template, tokenizer)
        new_ids = list(prepare_tokenizer(tokenizer, template))
    else:
        template, new_ids = cfg.data.template or "", []
    new_ids += objective_tokens(objective, tokenizer)  # e.g. a classifier's dedicated pad token
    data = prepare_data(cfg.data, cfg.train.seed, tokenizer, template, objective, accelerator)
    objective_cfg = fit_data(objective, objective_cfg, data)  # e.g. class names from the training rows
    built = Built(cfg, tokenizer, template, new_ids, objective, objective_cfg, data)
    if with_model:
        # recorded in final/tunewright.json: an adapter of a cut model (model.layers) goes on the same cut base
        built.model_settings = {**layer_settings(cfg.model), **model_config(objective, objective_cfg, tokenizer)}
        model = load_model(cfg.model, objective.HEAD, built.model_settings)
        if new_ids:
            resize_embeddings(model, tokenizer, new_ids)
        built.method = METHODS.get(cfg.method.name)
        built.model = built.method.apply(model, cfg.method, new_token_ids=new_ids)
        # after the method: adapter layers inside the blocks are patched and compiled with them
        built.model = apply_speedups(built.model, cfg.model)
        built.counts = count_parameters(built.model)
    return built


def quantized_record(model_cfg) -> dict:
    """The base's quantization for the run record: inference and merging load the base as it was
    trained on (models/trained.py `load_base`), then dequantize it."""
    if not (model_cfg.load_in_4bit or model_cfg.load_in_8bit):
        return {}
    keys = ("load_in_4bit", "load_in_8bit", "quantization")
    return {"quantized": model_cfg.model_dump(include=set(keys), mode="json")}


def validation_text(built: Built) -> str:
    """`tunewright validate`'s report of a built run (data only)."""
    from tunewright.data.report import validation_report
    return validation_report(built.data, built.tokenizer, built.template, built.new_token_ids, built.objective,
                             built.cfg.data)


def train(config, overrides: list[str] | None = None) -> RunResult:
    """Run a fine-tune described by a YAML path, a dict or a RunConfig (+ dotted overrides)."""
    from tunewright.training.accelerator import make_accelerator
    from tunewright.training.run_folder import RunLock

    cfg = as_run_config(config, overrides)
    run_dir = cfg.run_dir()
    # `auto` becomes the precision used before anything reads it: config.yaml and the resume key
    # record the resolved value, so a resume elsewhere keeps it or refuses it
    cfg, why = resolve_run_precision(cfg, run_dir)
    acc = make_accelerator(cfg.train.mixed_precision)

    def say(*parts) -> None:  # console lines name files and models: never print a credential in them
        acc.print(*(redact(str(p)) for p in parts))

    say(f"precision: {cfg.train.mixed_precision} ({why})")
    # the run folder has one owner (the main process holds its lock), and a full or read-only disk
    # anywhere in the run ends it with one line naming the file
    with writing(run_dir, "write", "what was saved before is intact; free space or fix permissions, then resume "
                 "with train.resume=auto"):
        with RunLock(run_dir, say) if acc.is_main_process else nullcontext():
            return _train(cfg, acc, run_dir, say)


def resolve_run_precision(cfg: RunConfig, run_dir: Path) -> tuple[RunConfig, str]:
    """`cfg` with `train.mixed_precision` resolved for this machine (and the checkpoint it resumes), and why."""
    import torch

    from tunewright.training.precision import resolve_precision
    from tunewright.training.resume import trained_precision

    value, why = resolve_precision(cfg.train.mixed_precision, cpu=not torch.cuda.is_available(),
                                   trained_in=trained_precision(cfg, run_dir))
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"mixed_precision": value})}), why


def _train(cfg: RunConfig, acc, run_dir: Path, say) -> RunResult:
    import torch

    from tunewright.eval.during_training import metric_evaluator
    from tunewright.models.methods import param_groups
    from tunewright.models.params import format_counts
    from tunewright.models.speed import forward_context
    from tunewright.objectives import load_state, save_state, setup, trainable
    from tunewright.regularizers.hook import setup_regularizers
    from tunewright.training.best import check_best_kept, describe, final_choice, load_best_weights
    from tunewright.training.checkpoint import prune_checkpoints, save_checkpoint
    from tunewright.training.final import save_final
    from tunewright.training.logging import MetricsLog, Progress
    from tunewright.training.loop import LoopParts, fit
    from tunewright.training.optim import build_optimizer, build_scheduler
    from tunewright.training.plan import plan_steps
    from tunewright.training.resume import checkpoint_record, data_digest, forget_after, resolve_resume, resume
    from tunewright.training.run_folder import prepare_run_dir

    torch.manual_seed(cfg.train.seed)
    resume_from = resolve_resume(cfg, run_dir, say)
    if acc.is_main_process:
        prepare_run_dir(run_dir, cfg.output.overwrite, resuming=bool(cfg.train.resume))
    acc.wait_for_everyone()

    # 1. build: objective, tokenizer, data, model + method, step plan, optimizer
    world = acc.num_processes
    if cfg.train.batch_size % (cfg.train.micro_batch_size * world):
        raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) must be a multiple of micro_batch_size x "
                          f"processes ({cfg.train.micro_batch_size} x {world})")
    built = build(cfg, acc)
    for line in [*built.data.report, format_counts(*built.counts)]:
        say(line)
    steps = plan_steps(cfg, built.data, built.objective, built.tokenizer.pad_token_id, world, say)
    model = acc.prepare(built.model)
    # after `prepare` (DDP has made every rank's weights the same) and before a resume restores the
    # trained weights: L2-SP's θ0 and an objective's frozen reference are of the starting model; the
    # objective's state before the optimizer, which also trains what it adds (PPO's value head)
    objective_state = setup(built.objective, model, built.objective_cfg, built.data)
    optimizer = build_optimizer(model, cfg.train, param_groups(built.method, acc.unwrap_model(model), cfg.method,
                                                               cfg.train))
    extra = trainable(built.objective, objective_state)
    if extra:
        optimizer.add_param_group({"params": extra, "weight_decay": 0.0})
    scheduler = build_scheduler(optimizer, cfg.train, steps.total_steps)
    regularizers = setup_regularizers(cfg.regularizers, acc.unwrap_model(model), run_dir)

    def save_weights(path: Path) -> None:  # the method's weights, the regularizers' and objective's state beside them
        built.method.save(acc.unwrap_model(model), path)
        if regularizers is not None:
            regularizers.save(path / "regularizers")
        save_state(built.objective, objective_state, path / "objective")

    def load_weights(path: Path) -> None:
        built.method.load(acc.unwrap_model(model), path)
        if regularizers is not None:
            regularizers.load(path / "regularizers")
        load_state(built.objective, objective_state, path / "objective")

    # 2. resume: refuse changed settings, then weights through the method, optimizer, scheduler,
    #    RNG and data position; honoured changes (lr, total steps) are applied and said
    record = checkpoint_record(cfg, world, data_digest(built.data.train), steps.total_steps)
    start_state = None
    if resume_from is not None:
        start_state = resume(resume_from, record, cfg, load_weights, optimizer, scheduler, steps.total_steps, say)
        check_best_kept(cfg.eval, run_dir / "checkpoints", start_state)
        if acc.is_main_process:
            forget_after(run_dir, start_state["step"], say)
    elif cfg.train.resume and acc.is_main_process and (run_dir / "metrics.jsonl").exists():
        # resume=auto found no usable checkpoint: training restarts at step 0, and the lines of the
        # attempt that saved nothing would otherwise repeat those steps in metrics.jsonl
        say(f"train.resume: no complete checkpoint in {run_dir / 'checkpoints'}; starting at step 0")
        (run_dir / "metrics.jsonl").unlink()
    if acc.is_main_process:  # only now: the settings in use, after a resume has accepted them
        with writing(run_dir / "config.yaml", "write the run's config"):
            write_text_atomic(run_dir / "config.yaml", dump_config(cfg))

    # 3. fit
    start = start_state["step"] if start_state else 0
    log = MetricsLog(run_dir, cfg.train.report_to, cfg.output.name or "run", enabled=acc.is_main_process,
                     start_step=start)

    def save(step: int, state: dict) -> None:
        if acc.is_main_process:
            save_checkpoint(run_dir / "checkpoints", step, optimizer=optimizer, scheduler=scheduler,
                            save_weights=save_weights, trainer_state={**state, **record}, tokenizer=built.tokenizer)
            prune_checkpoints(run_dir / "checkpoints", cfg.output.save_total_limit, state.get("best_step"))
        acc.wait_for_everyone()

    progress = Progress(steps.total_steps, start, enabled=acc.is_main_process)
    parts = LoopParts(model=model, objective=built.objective, objective_cfg=built.objective_cfg,
                      objective_state=objective_state, optimizer=optimizer,
                      scheduler=scheduler, accelerator=acc, plan=steps.plan, collate=steps.collate,
                      eval_batches=steps.eval_batches, save=save, log=log.log, progress=progress,
                      evaluate_metrics=metric_evaluator(cfg, built.tokenizer, built.template, built.objective,
                                                        built.data.eval_examples),
                      forward_context=forward_context(cfg.model), regularizers=regularizers,
                      steps_per_batch=steps.steps_per_batch)
    try:
        result = fit(parts, cfg.train, cfg.eval, steps.total_steps, cfg.output.save_steps, start_state)
    finally:  # a failed save or a user error must not leave a half-drawn bar or an open event file
        progress.close()
        log.close()

    # 4. save: final/ (the last step, or with eval.load_best the best checkpoint's weights) and,
    #    when the run evaluated, its report
    final = None
    choice = final_choice(cfg.eval, result.step, result.best_step, result.best_metric)
    if acc.is_main_process and result.stopped_by != "signal":
        final = run_dir / "final"
        trained = acc.unwrap_model(model)
        load_best_weights(lambda path: built.method.load(trained, path), run_dir / "checkpoints", choice, result.step)
        if regularizers is not None:  # EWC's Fisher, MAS's importances: at the weights final/ holds
            # one row per batch: the Fisher and MAS's importances are means over per-sample gradients
            regularizers.finish(trained, lambda: (steps.collate([row]) for mb in steps.plan(0) for row in mb),
                                lambda m, batch: built.objective.loss(m, batch, built.objective_cfg,
                                                                      objective_state)[0])
        meta = {"base_model": cfg.model.name, "revision": cfg.model.revision, "method": cfg.method.name,
                  "objective": built.objective_cfg.name, "head": built.objective.HEAD,
                  **({"model_config": built.model_settings} if built.model_settings else {}),
                  **quantized_record(cfg.model),
                  "template": cfg.data.template, "system_prompt": cfg.data.system_prompt, "plugins": cfg.plugins,
                  **choice}
        with writing(final, "save final/", "the checkpoints are intact; free space, then resume with "
                     "train.resume=auto to write final/"):
            save_final(final, trained, built.method, built.tokenizer, built.template,
                       built.objective.end_ids(built.tokenizer, built.template), meta,
                       save_more=lambda out: regularizers is not None and regularizers.save(out / "regularizers"))
            if steps.eval_batches:  # report.md, results.json and curves from metrics.jsonl
                from tunewright.eval.report import write_run_report
                write_run_report(run_dir, final=choice)
    acc.wait_for_everyone()
    say(_ending(result, final, describe(choice)))
    return RunResult(run_dir, final, result.step, result.stopped_by, result.last_metrics, result.best_step,
                     result.signal)


def _ending(result, final, holds: str) -> str:
    if result.stopped_by == "signal":
        import signal
        name = signal.Signals(result.signal).name if result.signal else "a signal"
        saved = "checkpoint saved, no final/ yet" if result.step else "nothing trained yet"
        return f"stopped by {name} at step {result.step}; {saved}; continue with train.resume=auto"
    # no loss when a resume found every step done (a checkpoint at the last step: it only writes final/)
    loss = result.last_metrics.get("loss")
    return (f"done: {result.step} steps ({result.stopped_by})" + (f"; loss {loss:.4f}" if loss is not None else "")
            + (f"; saved {final}, which {holds.removeprefix('final/ ')}" if final else ""))
