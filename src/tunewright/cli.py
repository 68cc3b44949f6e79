"""The `tunewright` command line: train, validate, estimate, generate, chat, eval, merge, predict, inspect, demo, ...

Every command turns a TunewrightError into one line on stderr and exit code 2 (no traceback).
Heavy libraries are imported inside commands so `tunewright --help` answers at once.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import List, Optional

import click
import typer

from tunewright import cli_applied
from tunewright.errors import Interrupted, TunewrightError
from tunewright.secrets import redact

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune language models from one YAML file.")

OVERRIDES = typer.Argument(None, help="Dotted overrides, e.g. train.max_steps=50 method.r=16")


SMOKE = typer.Option(False, "--smoke", help="Tiny model, a few steps: check the recipe end to end in seconds")


@app.command()
def train(config: Path = typer.Argument(..., help="Recipe YAML"), overrides: Optional[List[str]] = OVERRIDES,
          smoke: bool = SMOKE):
    """Fine-tune: data -> model + method -> loop -> runs/<name>/final."""
    from tunewright.config import load_config
    from tunewright.run import train as run_train
    result = run_train(load_config(config, overrides or [], smoke=smoke))
    if result.signal:  # stopped by SIGINT/SIGTERM after its checkpoint: say so in the exit code too
        raise typer.Exit(128 + result.signal)


@app.command()
def validate(config: Path = typer.Argument(..., help="Recipe YAML"), overrides: Optional[List[str]] = OVERRIDES,
             smoke: bool = SMOKE):
    """Dry run: data statistics, rendered examples with the masked part marked, parameter counts."""
    from tunewright.config import load_config
    from tunewright.models.inspect import inspect_counts
    from tunewright.models.params import format_counts
    from tunewright.run import build, resolve_run_precision, validation_text
    from tunewright.secrets import redact

    cfg = load_config(config, overrides or [], smoke=smoke)
    built = build(cfg, with_model=False)
    typer.echo(redact(validation_text(built)))
    typer.echo(format_counts(*inspect_counts(cfg.model.name, cfg.method, trust_remote_code=cfg.model.trust_remote_code,
                                             added_tokens=len(built.new_token_ids))))
    resolved, why = resolve_run_precision(cfg, cfg.run_dir())
    typer.echo(f"precision: {resolved.train.mixed_precision} ({why})")
    from tunewright.models.memory import memory_report
    for line in memory_report(resolved):
        typer.echo(redact(line))


@app.command()
def estimate(config: Optional[Path] = typer.Argument(None, help="Recipe YAML (or use --model/--method)"),
             overrides: Optional[List[str]] = OVERRIDES,
             model: Optional[str] = typer.Option(None, help="Model folder, config.json or hub id (instead of a recipe)"),
             method: str = typer.Option("lora", help="Method with its defaults (with --model)"),
             seq: Optional[int] = typer.Option(None, help="Tokens per row (default: data.cutoff_len)"),
             batch: Optional[int] = typer.Option(None, help="Rows per micro-batch (default: train.micro_batch_size)"),
             optimizer: Optional[str] = typer.Option(None, help="adamw | adamw_8bit | paged_adamw_8bit"),
             checkpointing: Optional[bool] = typer.Option(None, "--checkpointing/--no-checkpointing"),
             offload: bool = typer.Option(False, help="Optimizer state in host memory (DeepSpeed ZeRO-Offload)"),
             memory_gib: Optional[float] = typer.Option(None, help="Memory to fit in (default: this machine's device)"),
             course: bool = typer.Option(False, help="The course's table: T0_3B, mt0-xxl, bloomz-7b1 beside the PEFT README")):
    """Bytes of weights, gradients, optimizer state and activations a run needs (models/memory.py)."""
    from tunewright.config import load_config
    from tunewright.models.memory import GiB, OPTIMIZERS, course_table, memory_report

    if course:
        typer.echo(course_table()[1])
        return
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise TunewrightError(f"estimate --optimizer: {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    if config is not None:
        cfg = load_config(config, overrides or [])
    elif model is not None:
        cfg = load_config(raw={"model": {"name": model}, "method": {"name": method},
                               "data": {"datasets": [{"path": "-"}]}}, overrides=overrides or [])
    else:
        raise TunewrightError("estimate: give a recipe YAML, --model MODEL, or --course")
    from tunewright.run import resolve_run_precision
    cfg, _ = resolve_run_precision(cfg, cfg.run_dir())  # `auto` -> this machine's precision, as training would
    changes = {k: v for k, v in {"seq": seq, "batch": batch, "optimizer": optimizer, "checkpointing": checkpointing,
                                 "offload": offload or None}.items() if v is not None}
    available, where = (int(memory_gib * GiB), f"{memory_gib:g} GiB") if memory_gib else (None, None)
    for line in memory_report(cfg, available, where, **changes):
        typer.echo(redact(line))


@app.command()
def verify(config: Path = typer.Argument(..., help="Recipe YAML"), overrides: Optional[List[str]] = OVERRIDES,
           smoke: bool = SMOKE):
    """Check the invariants on your model, data and settings: accumulation, packing, merge, template, EOS."""
    from tunewright.config import load_config
    from tunewright.verify import run_checks

    checks = run_checks(load_config(config, overrides or [], smoke=smoke))
    for check in checks:
        typer.echo(check.line())
    failed = [c.name for c in checks if not c.passed]
    typer.echo(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


ADAPTERS = typer.Option(None, "--adapter", help=(
    "An adapter folder, or NAME=PATH; repeatable: several adapters on one base (the argument, --base or their "
    "recorded base), switched with --use (generate) or /use NAME (chat)"))


@app.command()
def generate(path: Optional[str] = typer.Argument(
                 None, help="A run's final/ or checkpoint folder, an adapter, or a model (with --adapter: the base)"),
             prompt: Optional[List[str]] = typer.Option(None, "--prompt", "-p", help="Prompt (repeatable)"),
             prompts_file: Optional[Path] = typer.Option(None, help="A text file with one prompt per line"),
             base: Optional[str] = typer.Option(None, help="Base model for an adapter (default: the one it records)"),
             max_new_tokens: int = typer.Option(128), sample: bool = typer.Option(False, help="Sample instead of greedy"),
             temperature: float = typer.Option(1.0), top_p: float = typer.Option(1.0),
             stop: Optional[List[str]] = typer.Option(None, help="Stop string (repeatable)"),
             raw: bool = typer.Option(False, help="Send prompts as plain text, without the chat template"),
             seed: int = typer.Option(0), adapter: Optional[List[str]] = ADAPTERS,
             use: Optional[List[str]] = typer.Option(
                 None, "--use", help="With --adapter: the adapters that answer (repeatable; `base`: adapters off); default all")):
    """Generate completions with the same template the model was trained with."""
    from tunewright.eval.generate import generate as run_generate
    from tunewright.models.adapters import active, open_for_answers

    _at_least_one(max_new_tokens, "generate --max-new-tokens")
    # the bounds eval's generation section has: transformers raises a raw ValueError on temperature 0
    if temperature <= 0:
        raise TunewrightError(f"generate --temperature: must be above 0 (got {temperature}); greedy decoding is the "
                              f"default without --sample")
    if not 0 < top_p <= 1:
        raise TunewrightError(f"generate --top-p: must be in (0, 1] (got {top_p})")
    if use and not adapter:
        raise TunewrightError("generate --use: picks among --adapter folders; give them with --adapter")
    prompts = list(prompt or [])
    if prompts_file:
        prompts += _read_prompts(prompts_file)
    if not prompts:
        raise TunewrightError("generate: give --prompt or --prompts-file")
    model, tokenizer, records = open_for_answers(path, adapter or [], base)
    names = list(use or records)
    for name in names:
        record = records.get(name) or next(iter(records.values()))  # `base`: prompted as the first adapter's run
        with active(model, name) if name is not None else nullcontext():
            outs = run_generate(model, tokenizer, prompts, template=tokenizer.chat_template,
                                raw=raw or record.get("raw_text", False), max_new_tokens=max_new_tokens,
                                do_sample=sample, temperature=temperature, top_p=top_p, stop=stop, seed=seed,
                                system_prompt=record.get("system_prompt"))
        tag = f"[{name}] " if len(names) > 1 else ""
        for p, out in zip(prompts, outs):
            typer.echo(out if len(prompts) == 1 and not tag else f"### {tag}{p}\n{out}\n")


def _at_least_one(value: int, what: str) -> None:
    if value < 1:
        raise TunewrightError(f"{what}: must be at least 1 (got {value})")


def _read_prompts(path: Path) -> list[str]:
    """The non-blank lines of a prompts file; a FIFO, a device or a folder is refused by name (reading
    a pipe without a writer would wait forever)."""
    from tunewright.data.sources import path_kind

    try:
        what = path_kind(path)
        if what == "missing":
            raise TunewrightError(f"{path}: no such prompts file")
        if what != "file":
            raise TunewrightError(f"{path}: is {what}, not a prompts file")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TunewrightError(f"{path}: cannot read the prompts file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise TunewrightError(f"{path}: the prompts file is not UTF-8 text ({err.reason})") from None
    return [line for line in text.splitlines() if line.strip()]


@app.command()
def chat(path: Optional[str] = typer.Argument(None, help="A run's final/ folder, an adapter, or a model (with --adapter: the base)"),
         base: Optional[str] = typer.Option(None), max_new_tokens: int = typer.Option(256),
         system: Optional[str] = typer.Option(None, help="System prompt"), adapter: Optional[List[str]] = ADAPTERS):
    """Interactive chat over the training template (empty line or Ctrl-D quits; /use NAME switches adapters)."""
    from tunewright.eval.generate import generate as run_generate
    from tunewright.models.adapters import BASE, active, open_for_answers

    _at_least_one(max_new_tokens, "chat --max-new-tokens")
    model, tokenizer, records = open_for_answers(path, adapter or [], base)
    current = next(iter(records))
    if current is not None:
        typer.echo(f"adapters: {', '.join(records)}; answering: {current} (/use NAME switches, /use {BASE} turns them off)")
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if not text:
            break
        if current is not None and text.startswith("/use "):
            wanted = text.removeprefix("/use ").strip()
            if wanted in records or wanted == BASE:
                current = wanted
                typer.echo(f"answering: {current}")
            else:
                typer.echo(f"no adapter named {wanted!r}; loaded: {', '.join(records)} (or {BASE})")
            continue
        history.append({"role": "user", "content": text})
        record = records.get(current) or next(iter(records.values()))
        with active(model, current) if current is not None else nullcontext():
            reply = run_generate(model, tokenizer, [history], template=tokenizer.chat_template,
                                 max_new_tokens=max_new_tokens, system_prompt=record.get("system_prompt"))[0]
        history.append({"role": "assistant", "content": reply})
        typer.echo(f"model> {reply}")


@app.command()
def merge(path: str = typer.Argument(..., help="Adapter folder (e.g. runs/NAME/final)"),
          out: Path = typer.Option(..., "--out", help="Empty folder for the merged model"),
          base: Optional[str] = typer.Option(None, help="Base model (default: the one the adapter records)"),
          dtype: str = typer.Option("fp32", help="Dtype of the merge and the saved weights: fp32, bf16 or fp16")):
    """Fold an adapter into its base: a plain transformers model folder, after a parity check."""
    from tunewright.models.merge import merge_to_folder
    merge_to_folder(path, out, base=base, dtype=dtype, echo=typer.echo)
    typer.echo(f"merged model written to {out}")


@app.command("export-embedder")
def export_embedder(path: str = typer.Argument(..., help="A contrastive run folder (or its final/)"),
                    out: Path = typer.Option(..., "--out", help="Empty folder for the sentence-transformers model"),
                    base: Optional[str] = typer.Option(None, help="Base model (default: the one the run records)")):
    """An embedding run as a sentence-transformers folder: SentenceTransformer(out) embeds as the run did."""
    from tunewright.models.sentence import export_sentence_transformer
    export_sentence_transformer(path, out, base=base)
    typer.echo(f"sentence-transformers model written to {out}")


@app.command()
def inspect(model: str = typer.Argument(..., help="Model folder, config.json, hub id, a recipe YAML, or a run/adapter folder"),
            overrides: Optional[List[str]] = OVERRIDES,
            nearest: int = typer.Option(0, help="For a prompt-tuning run: each virtual token's N nearest vocabulary tokens")):
    """Parameter and trainable counts for a method, built on the meta device (no weights loaded); for a
    run or adapter folder, what it holds."""
    from tunewright.config import load_config
    from tunewright.models.inspect import inspect_counts, inspect_trained, is_trained_folder
    from tunewright.models.params import format_counts

    if is_trained_folder(model):
        if overrides:
            raise TunewrightError(f"inspect: {model} is a trained folder; overrides apply to a model or a recipe")
        for line in inspect_trained(model, nearest):
            typer.echo(redact(line))
        return
    if nearest:
        raise TunewrightError("inspect --nearest: give a run or adapter folder of a prompt-tuning run")
    if model.endswith((".yaml", ".yml")):
        cfg = load_config(model, overrides or [])
    else:
        cfg = load_config(raw={"model": {"name": model}, "data": {"datasets": [{"path": "-"}]}}, overrides=overrides or [])
    typer.echo(format_counts(*inspect_counts(cfg.model.name, cfg.method, trust_remote_code=cfg.model.trust_remote_code)))


def _candidate_name(path: str) -> str:
    """A table name for a quick-mode candidate: the folder's name (its run's for `.../final`), redacted:
    it names files and plots."""
    p = Path(path.rstrip("/\\") or path)
    return redact((p.parent.name if p.name == "final" and p.parent.name else p.name) or "model")


@app.command("eval")
def eval_command(config: Optional[Path] = typer.Argument(None, help="Eval config YAML: candidates, data, metrics"),
                 overrides: Optional[List[str]] = typer.Argument(
                     None, help="Dotted overrides, e.g. data.limit=20 generation.max_new_tokens=32"),
                 model: Optional[str] = typer.Option(None, help="Model folder, hub id or alias (the base of --adapter/--run)"),
                 adapter: Optional[List[str]] = typer.Option(
                     None, help="An adapter folder, or NAME=PATH; repeatable: each is a candidate on the base --model"),
                 run: Optional[str] = typer.Option(None, help="A run folder (its final/ is evaluated)"),
                 data: Optional[str] = typer.Option(None, help="Prompts and references: a json/jsonl/csv/parquet file"),
                 data_format: Optional[str] = typer.Option(None, "--format", help="Row format of --data (default alpaca)"),
                 metrics: Optional[str] = typer.Option(None, help="Comma-separated metric names (default rouge)"),
                 limit: Optional[int] = typer.Option(None, help="Use at most N rows of --data"),
                 max_new_tokens: Optional[int] = typer.Option(None, help="New tokens per answer at most (default 64)"),
                 out: Optional[Path] = typer.Option(
                     None, help="Output folder, new or empty (default: runs/<config name>, or runs/eval-<candidate>)"),
                 overwrite: bool = typer.Option(
                     False, help="Replace an earlier evaluation in --out (only the files an evaluation writes)"),
                 smoke: bool = typer.Option(False, "--smoke", help="Apply the config's smoke overrides (tiny models)")):
    """Score candidates (base, full, LoRA, ...) on the same data: outputs jsonl, results.json, report.md, plots.
    The config's `task` (generate, score, multiple_choice, classify) says how each candidate is asked."""
    from tunewright.eval.config import load_eval_config
    from tunewright.eval.tasks import evaluate

    quick = {"--model": model, "--adapter": adapter, "--run": run, "--data": data, "--format": data_format,
             "--metrics": metrics, "--limit": limit, "--max-new-tokens": max_new_tokens}
    given = [k for k, v in quick.items() if v is not None]
    if config is not None:
        if given:
            raise TunewrightError(f"eval: {', '.join(given)} cannot be combined with a config file; change the "
                                  f"config with overrides instead (e.g. data.limit=10)")
        cfg = load_eval_config(config, [*(overrides or []), *(["output.overwrite=true"] if overwrite else [])],
                               smoke=smoke)
    else:
        if not (model or adapter or run) or not data:
            raise TunewrightError("eval: give an eval config, or --model/--adapter/--run with --data")
        if adapter and run:
            raise TunewrightError("eval: give --adapter or --run, not both")
        if adapter:
            from tunewright.models.adapters import parse_adapters
            candidates = [{"name": redact(n), "model": model, "adapter": p} for n, p in parse_adapters(adapter).items()]
        else:
            candidates = [{"name": _candidate_name(run or model), "model": model, "run": run}]
        name = "-".join(c["name"] for c in candidates)
        raw: dict = {"candidates": candidates,
                     "data": {"path": data, "format": data_format or "alpaca", "limit": limit},
                     "output": {"name": f"eval-{name}", "overwrite": overwrite}}
        if metrics is not None:
            raw["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()]
        if max_new_tokens is not None:
            raw["generation"] = {"max_new_tokens": max_new_tokens}
        cfg = load_eval_config(raw=raw, overrides=overrides or [], smoke=smoke)
    evaluate(cfg, out_dir=out, echo=typer.echo)


@app.command()
def demo(out_dir: Path = typer.Option(Path("runs"), help="Parent folder of the demo run"),
         steps: int = typer.Option(40, help="Optimizer steps"),
         model: str = typer.Option("smollm2-135m-instruct", help="Model (default: the offline SmolLM2-135M-Instruct)"),
         n_test: int = typer.Option(20, help="Held-out test prompts")):
    """Teach the default model a JSON extraction format it lacks: evaluate, LoRA-tune, evaluate, report."""
    from tunewright.lab.demo import run_demo
    run_demo(out_dir, steps=steps, model=model, n_test=n_test)


adapters = typer.Typer(no_args_is_help=True, help="Adapters on one base: combine LoRA adapters into one.")
app.add_typer(adapters, name="adapters")


@adapters.command("combine")
def adapters_combine(paths: List[str] = typer.Argument(..., help="Two or more LoRA adapter folders (or NAME=PATH)"),
                     out: Path = typer.Option(..., "--out", help="Empty folder for the combined adapter"),
                     weights: Optional[str] = typer.Option(None, help="Comma-separated, one per adapter (default 1 each)"),
                     how: str = typer.Option("linear", help="linear (one rank), cat (exact sum of the updates) or svd"),
                     rank: Optional[int] = typer.Option(None, help="With svd: the new rank (default the largest)"),
                     base: Optional[str] = typer.Option(None, help="Base model (default: the one they record)")):
    """Combine LoRA adapters into a new one (peft's add_weighted_adapter), saved in PEFT format."""
    from tunewright.models.adapters import combine, parse_adapters

    named = parse_adapters(paths, "adapters combine")
    try:
        values = [float(w) for w in weights.split(",")] if weights else [1.0] * len(named)
    except ValueError:
        raise TunewrightError(f"adapters combine --weights: {weights!r} is not a comma-separated list of numbers") from None
    combine(named, values, how, out, base=base, rank=rank)
    typer.echo(f"combined adapter ({how}, weights {values}) written to {out}")


continual = typer.Typer(no_args_is_help=True, help="Task sequences: measure forgetting, compare strategies against it.")
app.add_typer(continual, name="continual")


@continual.command("compare")
def continual_compare(config: Path = typer.Argument(..., help="Continual config YAML: tasks, scenario, run sections"),
                      overrides: Optional[List[str]] = OVERRIDES,
                      strategies: str = typer.Option("naive,ewc,replay", help=(
                          "Comma-separated: naive, joint, ewc, si, mas, l2_sp, replay, lwf, generative_replay, adapters "
                          "(a PEFT method only)")),
                      smoke: bool = SMOKE):
    """Train the task sequence once per strategy; write R, BWT/FWT/forgetting, costs: results.json, report.md,
    a heatmap of R per strategy and the first task's score across the sequence."""
    from tunewright.continual.config import load_continual_config
    from tunewright.continual.sequence import compare

    cfg = load_continual_config(config, overrides or [], smoke=smoke)
    results = compare(cfg, [s.strip() for s in strategies.split(",") if s.strip()], say=typer.echo)
    stopped = next((r["stopped"] for r in results.values() if "stopped" in r), None)
    if stopped is not None:  # the task's run saved a checkpoint at the step boundary; run again to go on
        raise typer.Exit(128 + stopped)


# the applied fine-tuning commands (classification heads, recommenders) live in cli_applied.py
app.command()(cli_applied.predict)
app.command()(cli_applied.recommend)
app.add_typer(cli_applied.data_app, name="data")
app.add_typer(cli_applied.report_app, name="report")

lab = typer.Typer(no_args_is_help=True, help="The synthetic world's task data.")
app.add_typer(lab, name="lab")


@lab.command("export")
def lab_export(task: List[str] = typer.Option(..., help="Task name (see `tunewright lab list`); repeat for a mixture"),
               out: Path = typer.Option(..., help="Folder for train/validation/test.jsonl"),
               seed: int = typer.Option(0), overwrite: bool = typer.Option(False),
               held_out: Optional[List[str]] = typer.Option(None, help="A mixture's task with test rows only (repeatable)"),
               options: Optional[List[str]] = typer.Argument(None, help="Task options, e.g. n_train=500 fmt=messages")):
    """Write a lab task's train/validation/test splits as jsonl; several tasks: one folder each, plus
    train/validation/test.jsonl of all of them with a `task` column."""
    from tunewright.config import shown, yaml_value
    from tunewright.lab.export import export_mixture, export_task
    from tunewright.lab.tasks import task_format

    opts = {}
    for item in options or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise TunewrightError(f"lab export: option {shown(item)}: expected key=value")
        opts[key] = yaml_value(text, f"lab export: option {key}")  # bounded: no alias bomb, no 10,000 levels
    if len(task) > 1 or held_out:
        paths = export_mixture(task, out, seed=seed, overwrite=overwrite, held_out=held_out or [], **opts)
    else:
        paths = export_task(task[0], out, seed=seed, overwrite=overwrite, **opts)
    typer.echo("\n".join(str(p) for p in paths))
    typer.echo(f"data.datasets[].format: {', '.join(sorted({task_format(t, opts.get('fmt')) for t in task}))}")


@lab.command("list")
def lab_list():
    """The lab's tasks and their options."""
    from tunewright.lab.tasks import TASKS, task_options
    for name in TASKS.names():
        typer.echo(f"{name}: " + ", ".join(f"{k}={v}" for k, v in task_options(name).items()))


@cli_applied.data_app.command("self-instruct")  # `tunewright data` is one group: ratings, self-instruct
def self_instruct(seeds: Path = typer.Option(..., help="Seed tasks: alpaca jsonl (instruction, input, output)"),
                  out: Path = typer.Option(..., help="Output jsonl (kept tasks); OUT.dropped.jsonl gets the rest"),
                  model: str = typer.Option("smollm2-135m-instruct", help="The model that writes new tasks"),
                  proposals: int = typer.Option(32, help="Candidate tasks to generate"),
                  shots: int = typer.Option(4, help="Tasks shown per prompt (up to 2 of them generated ones)"),
                  batch_size: int = typer.Option(8), max_new_tokens: int = typer.Option(128),
                  temperature: float = typer.Option(0.7), top_p: float = typer.Option(0.9),
                  threshold: float = typer.Option(0.7, help="Drop a candidate whose ROUGE-L with a pool instruction reaches this"),
                  seed: int = typer.Option(0), overwrite: bool = typer.Option(False)):
    """Grow instruction data from seed tasks with the model itself (Self-Instruct), ROUGE-L filtered."""
    from tunewright.data.self_instruct import model_proposer, read_seed_tasks, self_instruct as run, write_results

    for value, what in ((proposals, "--proposals"), (shots, "--shots"), (batch_size, "--batch-size"),
                        (max_new_tokens, "--max-new-tokens")):
        _at_least_one(value, f"data self-instruct {what}")
    if not 0 < threshold <= 1 or temperature <= 0 or not 0 < top_p <= 1:
        raise TunewrightError("data self-instruct: --threshold and --top-p must be in (0, 1], --temperature above 0")
    tasks = read_seed_tasks(seeds)
    if out.exists() and not overwrite:  # before the model loads and generates for minutes
        raise TunewrightError(f"{out}: exists; pass --overwrite to replace it")
    propose = model_proposer(model, max_new_tokens, temperature, top_p, seed, batch_size)
    result = run(tasks, propose, proposals, shots=shots, batch_size=batch_size, seed=seed, threshold=threshold,
                 model_name=model, echo=typer.echo)
    kept, dropped = write_results(result, out, overwrite)
    typer.echo(result.summary())
    typer.echo(f"wrote {kept} ({len(result.kept)} rows, alpaca + provenance) and {dropped}")


def _leave(signum, frame):
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    """Console entry point. Exit codes: 0 done; 2 a user error (one line); 130 / 143 stopped by
    SIGINT (Ctrl-C) / SIGTERM: `train` after saving a checkpoint at the step boundary, any other
    command at once, with one line; 1 `verify` found a failing check."""
    # our own progress bar is the one to watch; hub/transformers bars (weight loading) are noise here
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # outside the training loop (which installs its own handlers), SIGINT and SIGTERM end the command
    # with one line; Interrupted is not an Exception, so nothing on the way out swallows it
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _leave)
        except ValueError:  # not the main thread (an embedding application): keep its handlers
            pass
    try:
        code = app(args=argv, standalone_mode=False)
    except TunewrightError as err:
        typer.echo(redact(f"error: {err}"), err=True)  # names and paths may hold a token or user:pass@
        return err.exit_code
    except Interrupted as err:
        typer.echo(f"{err}: stopped", err=True)
        return err.exit_code
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        typer.echo("interrupted: stopped", err=True)
        return 130
    except (click.ClickException, typer.TyperException) as err:
        # usage errors carry their own exit code and echo the bad value: redacted. typer 0.2x raises
        # them from its own copy of click, whose exceptions derive from TyperException
        shown = io.StringIO()
        err.show(file=shown)
        typer.echo(redact(shown.getvalue()), err=True, nl=False)
        return err.exit_code
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
