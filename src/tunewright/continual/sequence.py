"""One strategy's task sequence: each task trained through run.py (the one loop), then every task's
test set scored, giving one row of R; the zero-shot row first.

    <output.dir>/<output.name>/<strategy>/
        sequence.json        R so far, the zero-shot row, each task's wall time (written after each task);
                             with probes, P beside R: P[i] one score per probe after task i, and
                             zero_shot_P (continual/probes.py)
        0-<task>/ 1-<task>/  the tasks' runs (config.yaml, checkpoints/, final/)

Task i starts from task i-1's final/: through the method's `init_from` when it has one (an adapter
continues), else as the model (a full fine-tune). A sequence run again continues where it stopped:
rows already in sequence.json are kept (R's and P's), a task with final/ is scored, not retrained, and a task
whose run has checkpoints resumes from them (train.resume=auto) — so a killed sequence ends with the
same weights, R and P as one never stopped (on CPU, bit for bit, as a resumed run does). A task
whose R row is kept but whose P row is missing (probes added to the config since) has its probes
scored from its final/; probes renamed since P was recorded are scored again from every final/.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tunewright.continual.metrics import transfer
from tunewright.continual.strategies import TaskContext, strategy
from tunewright.disk import write_text_atomic
from tunewright.errors import ConfigError

__all__ = ["compare", "run_sequence", "task_run_config", "score_row", "SCENARIOS"]

# the labels a prediction is chosen among, per scenario: (the head's label probabilities, the row's task)
SCENARIOS = {
    "class_incremental": lambda probabilities, task: list(probabilities),  # every class the head knows
    "task_incremental": lambda probabilities, task: task.labels,  # the task identity is given
}


def sequence_dir(cfg, name: str) -> Path:
    return Path(cfg.output.dir) / (cfg.output.name or "continual") / name


def task_run_config(cfg, ctx: TaskContext) -> dict:
    """Task `ctx.index`'s run config (a dict for run.py) before the strategy's changes: the continual
    config's run sections (only the keys the user set), one head over the union of the labels, the
    task's training data, and the previous task's weights to start from."""
    method = cfg.method.model_dump(exclude_unset=True)
    raw = {"model": cfg.model.model_dump(exclude_unset=True), "method": {"name": cfg.method.name, **method},
           "train": cfg.train.model_dump(exclude_unset=True),
           "objective": {"name": "classification", "labels": cfg.labels()},
           "data": {"datasets": [s.model_dump(exclude_unset=True) for s in ctx.task.datasets],
                    "cutoff_len": cfg.data.cutoff_len},
           "output": {**cfg.output.model_dump(exclude_unset=True), "dir": str(ctx.folder), "name": ctx.run_dir.name}}
    if ctx.previous is not None:
        if "init_from" in type(cfg.method).model_fields:  # an adapter: the next task trains it on
            raw["method"]["init_from"] = str(ctx.previous)
        else:  # the weights themselves
            raw["model"]["name"] = str(ctx.previous)
    return raw


def score_row(model, tokenizer, cfg, route=None) -> list[float]:
    """Accuracy on each task's test rows (its eval_datasets), choosing among the labels the scenario
    allows (SCENARIOS); each task's rows scored inside `route(task)` when given (a strategy that
    routes rows by their task: adapters)."""
    from contextlib import nullcontext

    from tunewright.config import DataConfig
    from tunewright.data.mixture import load_examples
    from tunewright.eval.predict import predict_examples

    allowed = SCENARIOS[cfg.scenario]
    model.eval()
    row = []
    for task in cfg.tasks:
        examples = [ex for src in task.eval_datasets
                    for ex in load_examples(src, DataConfig(datasets=[src], cutoff_len=cfg.data.cutoff_len))[0]]
        with (route or (lambda t: nullcontext()))(task):
            predictions = predict_examples(model, tokenizer, examples, cfg.data.cutoff_len)
        right = sum(max(allowed(p["probabilities"], task), key=p["probabilities"].get) == p["reference"]
                    for p in predictions)
        row.append(right / len(predictions))
    return row


def zero_shot_row(cfg, folder: Path) -> list[float]:
    """The scores of the model the first task starts from (the base with its new, seeded head)."""
    import torch

    from tunewright.config import parse_config
    from tunewright.run import build

    run_cfg = parse_config(task_run_config(cfg, TaskContext(0, cfg, folder, None)), "the first task's run")
    torch.manual_seed(cfg.train.seed)  # as run.py seeds before it builds: the same starting head
    built = build(run_cfg)
    return score_row(built.model, built.tokenizer, cfg)


def _bytes_under(paths) -> int:
    return sum(f.stat().st_size for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*"))
               if f.is_file())


def fitting_strategy(cfg, name: str):
    """The strategy `name` (strategies.strategy), refused when the config cannot be trained with it."""
    module = strategy(name)
    reason = module.misfit(cfg) if hasattr(module, "misfit") else None
    if reason:
        raise ConfigError(f"--strategies {name}: {reason}")
    return module


def compare(cfg, strategies: list[str], say=print) -> dict:
    """Each strategy's sequence (run_sequence), the zero-shot rows (R's, P's) scored once for all of them, then
    results.json, report.md and the figures in <output.dir>/<output.name>/ (continual/report.py).
    Returns {strategy: its results}; a stop signal ends it after the task it stopped (`stopped`)."""
    from tunewright.continual.report import write_report

    for name in strategies:  # every name known and fitting the config before anything trains
        fitting_strategy(cfg, name)
    out = Path(cfg.output.dir) / (cfg.output.name or "continual")
    zero_shot = zero_shot_P = None
    results = {}
    for name in strategies:
        results[name] = run_sequence(cfg, name, say, zero_shot, zero_shot_P)
        zero_shot, zero_shot_P = results[name]["zero_shot"], results[name].get("zero_shot_P")
        if "stopped" in results[name]:
            return results
    write_report(out, cfg, results)
    say(f"compared {', '.join(strategies)}: {out / 'report.md'}")
    return results


def _state_files(folder: Path, cfg) -> list[Path]:
    """A regularizer's state after the last task and replay's buffers (none for the other strategies)."""
    last = folder / f"{len(cfg.tasks) - 1}-{cfg.tasks[-1].name}" / "final"
    return [last / "regularizers", *folder.glob("replay-*.json")]


def _final_of(cfg, ctx):
    """(model, tokenizer, no routing): the task's final/, scoring every task."""
    from tunewright.eval.predict import load_classifier

    return (*load_classifier(ctx.run_dir / "final"), None)


def _probe_record(record: dict, cfg) -> None:
    """Set sequence.json's probe keys for `cfg.probes`: kept when they name the same probes, else
    emptied (scored again); none without probes."""
    wanted = [{"name": p.name, "metric": p.metric} for p in cfg.probes]
    if not wanted:
        for key in ("probes", "P", "zero_shot_P"):
            record.pop(key, None)
    elif record.get("probes") != wanted:
        record.update(probes=wanted, P=[])
        record.pop("zero_shot_P", None)


def run_sequence(cfg, name: str, say=print, zero_shot: list[float] | None = None,
                 zero_shot_P: list[float] | None = None) -> dict:
    """Train `cfg`'s tasks in order with strategy `name`; return (and keep in sequence.json) R, the
    zero-shot row (`zero_shot` when another strategy's run scored it already: the same starting
    model), with probes P and its zero-shot row (`zero_shot_P`, likewise), the transfer numbers and
    the costs (wall time per task, extra bytes kept: a regularizer's state, replay's buffers and
    pseudo-rows, the earlier tasks' adapters). `stopped` is set when a stop signal ended a task's run
    (it saved a checkpoint; running the sequence again resumes it)."""
    import tunewright
    from tunewright.config import parse_config
    from tunewright.continual import probes
    from tunewright.training.checkpoint import complete_checkpoints

    module = fitting_strategy(cfg, name)
    settings = getattr(cfg.strategies, name, None)
    folder = sequence_dir(cfg, name)
    folder.mkdir(parents=True, exist_ok=True)
    record_file = folder / "sequence.json"
    # output.overwrite: a fresh sequence (the task runs overwrite theirs); else go on where it stopped
    fresh = cfg.output.overwrite or not record_file.is_file()
    record = json.loads(record_file.read_text(encoding="utf-8")) if not fresh else {
        "strategy": name, "scenario": cfg.scenario, "tasks": [t.name for t in cfg.tasks], "R": [], "seconds": []}
    if "zero_shot" not in record:
        if zero_shot is None:
            say(f"{name}: scoring the starting model on every task (the zero-shot row)")
        record["zero_shot"] = zero_shot if zero_shot is not None else zero_shot_row(cfg, folder)
        write_text_atomic(record_file, json.dumps(record, indent=1))
    _probe_record(record, cfg)
    encoded = []  # the probes' rows, encoded when a row of P is first scored

    def probe_row(lm) -> list[float]:
        encoded[:] = encoded or probes.encode_probes(cfg, say)
        return probes.probe_row(lm, encoded)

    if cfg.probes and "zero_shot_P" not in record:
        if zero_shot_P is None:
            say(f"{name}: scoring the base language model on every probe (the zero-shot row of P)")
        record["zero_shot_P"] = (zero_shot_P if zero_shot_P is not None
                                 else probe_row(probes.zero_shot_language_model(cfg)))
        write_text_atomic(record_file, json.dumps(record, indent=1))
    previous = None
    for i, task in enumerate(cfg.tasks):
        ctx = TaskContext(i, cfg, folder, previous)
        previous = ctx.run_dir / "final"
        if i < len(record["R"]):
            if cfg.probes and i == len(record["P"]):  # R's row kept from before these probes: score them
                record["P"].append(probe_row(probes.language_model_after(cfg, ctx)))
                write_text_atomic(record_file, json.dumps(record, indent=1))
            continue
        start = time.perf_counter()
        if fresh or not (ctx.run_dir / "final").is_dir():
            raw = module.changes(task_run_config(cfg, ctx), settings, ctx)
            if not fresh and ctx.run_dir.is_dir():  # (fresh: output.overwrite reaches the run, which starts anew)
                if complete_checkpoints(ctx.run_dir / "checkpoints"):  # a killed sequence: the task goes on
                    raw["train"]["resume"] = "auto"
                    raw["output"]["overwrite"] = False
                else:  # started but saved nothing: begin the task again
                    raw["output"]["overwrite"] = True
            say(f"{name}: task {i} ({task.name})")
            result = tunewright.train(parse_config(raw, f"{name} task {i} ({task.name})"))
            if result.stopped_by == "signal":
                return {**record, "stopped": result.signal}
        model, tokenizer, route = getattr(module, "load", _final_of)(cfg, ctx)
        record["R"].append(score_row(model, tokenizer, cfg, route))
        if cfg.probes:
            del model, route  # the classifier is loaded again, merged, under the LM head
            record["P"][i:] = [probe_row(probes.language_model_after(cfg, ctx))]
        record["seconds"].append(round(time.perf_counter() - start, 1))
        write_text_atomic(record_file, json.dumps(record, indent=1))
    kept = getattr(module, "kept", _state_files)(folder, cfg)  # what the strategy keeps beyond the model
    return {**record, **transfer(record["R"], record["zero_shot"]).to_dict(),
            "task_identity": module.task_identity, "extra_bytes": _bytes_under(kept)}
