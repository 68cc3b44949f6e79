"""Evaluate named candidates (base, full fine-tune, LoRA, ...) on the same prompts, side by side.

    read rows -> for each candidate: load, generate (same settings), score, save outputs jsonl
              -> improvement over the first candidate -> results.json, report.md, plots

The improvement of candidate c over the baseline b (the first candidate), per metric m:

    delta    = m(c) - m(b)                       in the metric's own units (ROUGE 0-1: x100 gives
                                                 the "absolute percentage improvement" of the
                                                 course's FLAN-T5 comparison)
    relative = (m(c) - m(b)) / |m(b)|            None when m(b) is 0

Candidates load one at a time and are freed before the next, so memory holds one model.

The output folder must be new or empty; `output.overwrite` (`--overwrite`) replaces an earlier
evaluation there, removing only the files an evaluation writes. A training run's folder is refused:
its report.md and results.json are the run's own.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from tunewright.eval.config import Candidate, EvalData, EvalRunConfig, Generation
from tunewright.errors import ConfigError, DataError
from tunewright.secrets import redact, redact_tree

__all__ = ["EvalRow", "DataCounts", "Loaded", "Comparison", "TaskResult", "Task", "GENERATE", "rows_of",
           "used_examples", "load_rows", "load_candidate", "answer", "score",
           "improvement", "EVAL_FILES", "is_run_folder", "earlier_eval_files", "evaluate_candidates"]


@dataclass
class EvalRow:
    """One prompt with its reference answer."""

    line: int
    prompt: str  # plain text: the encoder input of a seq2seq model, or a raw causal prompt
    messages: list[dict] | None  # the turns before the reference reply (templated causal LMs); None for raw segments
    reference: str
    group: str | None = None  # the row's value of data.group_by


@dataclass
class DataCounts:
    """What happened to the file's rows (nothing dropped without a count)."""

    read: int = 0  # rows in the file
    bad: int = 0  # malformed rows left out (data.on_error: skip)
    skipped: int = 0  # good rows left out by data.skip
    cut: int = 0  # good rows past data.limit
    used: int = 0


def rows_of(examples) -> list[EvalRow]:
    """Formatted examples as prompts (the turns before the last reply) and references (that reply)."""
    from tunewright.data.seq2seq import split_prompt_target

    rows = []
    for ex in examples:
        prompt, reference = split_prompt_target(ex)
        messages = None
        if ex.messages is not None:
            last = max(i for i, m in enumerate(ex.messages) if m.role == "assistant")
            messages = [{"role": m.role, "content": m.content, **({"context": m.context} if m.context else {})}
                        for m in ex.messages[:last]]
            reference = ex.messages[last].content
        rows.append(EvalRow(ex.line, prompt, messages, reference))
    return rows


def _examples(data: EvalData, path: str) -> tuple[list, object]:
    from tunewright.config import DataConfig
    from tunewright.data.mixture import load_examples

    src = data.source(path)
    return load_examples(src, DataConfig(datasets=[src], on_error=data.on_error, max_skipped=data.max_skipped))


def _groups(data: EvalData, lines: list[int]) -> list[str]:
    """Each row's value of `data.group_by`, read from the file's rows by line."""
    from tunewright.data.sources import read_rows

    values = {line: row.get(data.group_by) for line, row in read_rows(data.source(), [])}
    out = []
    for line in lines:
        value = values.get(line)
        if value is None:
            raise DataError(data.path, line, data.group_by, "missing (data.group_by names it)")
        out.append(str(value))
    return out


def used_examples(data: EvalData) -> tuple[list, DataCounts]:
    """The formatted rows of `data` that are evaluated (after skip and limit), via the project's
    readers and formats, and what happened to the others."""
    examples, report = _examples(data, data.path)
    kept = examples[data.skip:]
    if not kept:
        raise DataError(data.path, None, "skip", f"no rows left after skipping {data.skip} of {len(examples)}")
    used = kept[:data.limit] if data.limit else kept
    counts = DataCounts(read=report.rows, bad=report.skipped, skipped=min(data.skip, len(examples)),
                        cut=len(kept) - len(used), used=len(used))
    return used, counts


def load_rows(data: EvalData, seed: int = 0) -> tuple[list[EvalRow], DataCounts]:
    """The rows of `data` as prompts and references, with their group (data.group_by) and their
    in-context examples (data.shots, seeded by `seed`)."""
    used, counts = used_examples(data)
    rows = rows_of(used)
    if data.group_by:
        rows = [replace(r, group=g) for r, g in zip(rows, _groups(data, [r.line for r in rows]))]
    if data.shots:
        from tunewright.eval.shots import with_shots

        rows = with_shots(rows, rows_of(_examples(data, data.shots_from)[0]), data.shots, seed)
    return rows, counts


# ---------------------------------------------------------------- candidates

@dataclass
class Loaded:
    """A candidate ready to generate: the model and how it must be prompted."""

    model: object
    tokenizer: object
    template: str | None  # chat template text; None: prompts go in as plain text
    system_prompt: str | None = None  # the system prompt the run trained with
    eos_token_ids: list[int] | None = None  # end-of-turn ids for a plain model given a template
    encoder_decoder: bool = False


def load_candidate(c: Candidate) -> Loaded:
    """Load a plain model, an adapter or a run's final/ for generation."""
    from tunewright.config import ModelConfig
    from tunewright.data.templates import end_of_turn_ids, prepare_tokenizer, resolve_template
    from tunewright.models.load import load_model, load_tokenizer, resize_embeddings
    from tunewright.models.trained import load_trained, run_record

    trained = c.adapter or c.run
    if trained:
        model, tokenizer = load_trained(trained, dtype=c.dtype, base=c.model)
        record = run_record(trained)
        encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        # the trained folder saved the template it was trained with (train/serve identity)
        has_template = bool(tokenizer.chat_template) and not record.get("raw_text") and not encoder_decoder
        template = resolve_template(None, tokenizer) if has_template else None
        return Loaded(model, tokenizer, template, record.get("system_prompt"), None, encoder_decoder)
    cfg = ModelConfig(name=c.model, dtype=c.dtype)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg).eval()
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    if encoder_decoder or not (c.template or tokenizer.chat_template):
        return Loaded(model, tokenizer, None, encoder_decoder=encoder_decoder)
    template = resolve_template(c.template, tokenizer)
    new_ids = prepare_tokenizer(tokenizer, template)
    if new_ids:  # markers the base tokenizer lacked: rows at the mean embedding, untrained
        resize_embeddings(model, tokenizer, new_ids)
    return Loaded(model, tokenizer, template, None, end_of_turn_ids(tokenizer, template))


def answer(loaded: Loaded, rows: list[EvalRow], gen: Generation) -> list[str]:
    """Each row's generated answer, in row order.

    Rows with turns are rendered with the candidate's template; raw-segment rows (and every row
    for a seq2seq model or a model without template) go in as the plain prompt text, as in training.
    Answers are trimmed of outer whitespace (a reply's leading space is the tokenizer's, not the model's).
    """
    from tunewright.eval.generate import generate

    templated = [i for i, r in enumerate(rows) if loaded.template and r.messages is not None]
    plain = sorted(set(range(len(rows))) - set(templated))
    kwargs = dict(max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample, temperature=gen.temperature,
                  top_p=gen.top_p, stop=gen.stop or None, batch_size=gen.batch_size, seed=gen.seed,
                  eos_token_ids=loaded.eos_token_ids)
    out: list[str] = [""] * len(rows)
    for idx, raw in ((templated, False), (plain, True)):
        if not idx:
            continue
        prompts = [rows[i].prompt if raw else rows[i].messages for i in idx]
        texts = generate(loaded.model, loaded.tokenizer, prompts, template=loaded.template, raw=raw,
                         system_prompt=None if raw else loaded.system_prompt, **kwargs)
        for i, text in zip(idx, texts):
            out[i] = text.strip()
    return out


# ---------------------------------------------------------------- scores

def score(names: list[str], predictions: list[str], references: list[str],
          options: dict[str, dict] | None = None) -> tuple[dict, dict, dict]:
    """(corpus {key: float}, per example {key: [float]}, settings {metric name: str}); `options`
    maps a metric name to its keyword options (eval config `metric_options`).

    Accepts both shapes `metrics.compute` has had: {"corpus", "per_example", "settings"} and
    {name: MetricResult}.
    """
    from tunewright.eval.metrics import compute

    out = compute(list(names), predictions, references, options)
    if {"corpus", "per_example", "settings"} <= set(out) and isinstance(out["settings"], dict):
        return dict(out["corpus"]), dict(out["per_example"]), dict(out["settings"])
    corpus, per, settings = {}, {}, {}
    for name, result in out.items():
        corpus.update(result.corpus)
        per.update(result.per_example)
        settings[name] = result.settings
    return corpus, per, settings


def improvement(baseline: dict[str, float], scores: dict[str, float]) -> dict[str, dict]:
    """{key: {"delta": c - b, "relative": (c - b) / |b| or None}} for keys both have."""
    out = {}
    for key, value in scores.items():
        if key not in baseline:
            continue
        delta = value - baseline[key]
        out[key] = {"delta": delta, "relative": delta / abs(baseline[key]) if baseline[key] else None}
    return out


# ---------------------------------------------------------------- the whole comparison

@dataclass
class Comparison:
    out_dir: Path
    results: dict  # what results.json holds
    predictions: dict[str, list[str]] = field(default_factory=dict)

    def scores(self) -> dict[str, dict[str, float]]:
        return {c["name"]: c["scores"] for c in self.results["candidates"]}


def _write_outputs(path: Path, rows: list[EvalRow], predictions: list[str], per_example: dict) -> None:
    """One json line per row: prompt, reference, the candidate's output and its per-example scores."""
    with open(path, "w", encoding="utf-8") as f:
        for i, (row, pred) in enumerate(zip(rows, predictions)):
            scores = {k: v[i] for k, v in per_example.items() if i < len(v)}
            record = {"line": row.line, **({"group": row.group} if row.group is not None else {}),
                      "prompt": row.messages if row.messages is not None else row.prompt,
                      "reference": row.reference, "output": pred, "scores": scores}
            f.write(json.dumps(redact_tree(record), ensure_ascii=False) + "\n")


def _group_scores(cfg: EvalRunConfig, rows: list[EvalRow], predictions: list[str]) -> dict[str, dict]:
    """{group: {"rows": n, **corpus scores}}: each group scored as its own corpus (corpus BLEU is
    not a mean of sentence scores, so groups are not cut out of the per-example numbers)."""
    out = {}
    for group in dict.fromkeys(r.group for r in rows):
        idx = [i for i, r in enumerate(rows) if r.group == group]
        corpus, _, _ = score(cfg.metrics, [predictions[i] for i in idx], [rows[i].reference for i in idx],
                             cfg.metric_options)
        out[group] = {"rows": len(idx), **corpus}
    return out


# ---------------------------------------------------------------- the output folder

# What an evaluation writes into its folder, and so all that `output.overwrite` may remove.
EVAL_FILES = ("results.json", "report.md", "outputs-*.jsonl", "*.png")


def is_run_folder(folder: Path) -> bool:
    """A training run's folder: its report.md, results.json and plots are the run's own."""
    return (folder / "config.yaml").is_file() and any((folder / n).exists() for n in ("metrics.jsonl", "checkpoints", "final"))


def earlier_eval_files(out: Path, overwrite: bool, name: str) -> list[Path]:
    """The files of an earlier evaluation in `out` that `overwrite` allows removing. Refuses (before
    anything is written) a file, a training run's folder, a non-empty folder without `overwrite`,
    and a folder holding anything an evaluation does not write."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; eval --out needs a folder")
    if not out.is_dir():
        return []
    if is_run_folder(out):
        beside = out / (name if name.startswith("eval") else f"eval-{name}")
        raise ConfigError(f"{out}: is a training run's folder (its report.md and results.json are the run's own); "
                          f"write the evaluation beside them, e.g. --out {beside}")
    present = sorted(out.iterdir())
    if present and not overwrite:
        raise ConfigError(f"{out}: the output folder is not empty (an earlier evaluation?); pass --overwrite "
                          f"(output.overwrite: true) to replace it, or choose another --out")
    ours = [p for p in present if p.is_file() and any(p.match(pattern) for pattern in EVAL_FILES)]
    others = [p.name + ("/" if p.is_dir() else "") for p in present if p not in ours]
    if others:
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        raise ConfigError(f"{out}: --overwrite removes only what an evaluation writes ({', '.join(EVAL_FILES)}); the "
                          f"folder also holds {', '.join(others[:5])}{more}: move them or choose another --out")
    return ours


def _make_out_dir(out: Path, earlier: list[Path]) -> None:
    """Remove the earlier evaluation's files (a stale outputs-<name>.jsonl must not pass for this
    one's) and make the folder."""
    try:
        for path in earlier:
            path.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{out}: cannot prepare the output folder ({err.strerror or err})") from None


@dataclass
class TaskResult:
    """What one candidate gave on a task: per-row outputs, corpus scores, per-row scores, settings."""

    outputs: list[str]
    corpus: dict[str, float]
    per_example: dict[str, list[float]]
    settings: dict[str, str]  # how each score was computed


@dataclass
class Task:
    """How an eval config's `task` reads its rows and asks a candidate (eval/tasks.py has the others)."""

    rows: Callable  # cfg -> (EvalRows, DataCounts, the task's own data)
    run: Callable  # (cfg, candidate, rows, data) -> TaskResult
    describe: Callable = lambda cfg: None  # how candidates were asked, for the report (None: generation)


def _generate_rows(cfg: EvalRunConfig):
    rows, counts = load_rows(cfg.data, cfg.generation.seed)
    return rows, counts, None


def _generate(cfg: EvalRunConfig, c: Candidate, rows: list[EvalRow], data) -> TaskResult:
    loaded = load_candidate(c)
    predictions = answer(loaded, rows, cfg.generation)
    del loaded
    corpus, per_example, settings = score(cfg.metrics, predictions, [r.reference for r in rows], cfg.metric_options)
    return TaskResult(predictions, corpus, per_example, settings)


GENERATE = Task(_generate_rows, _generate)  # answer each prompt, score the text


def evaluate_candidates(cfg: EvalRunConfig, out_dir: Path | None = None, echo=print, task: Task | None = None
                        ) -> Comparison:
    """Score every candidate of `cfg` on its data; write outputs, results.json, report.md and plots.
    `task` (default: generation) says how a candidate is asked; eval/tasks.py picks it by `cfg.task`."""
    from tunewright.eval.report import write_compare_report

    task = task or GENERATE
    if task is GENERATE and cfg.task != "generate":
        raise ConfigError(f"task {cfg.task!r}: run it through tunewright.eval.tasks.evaluate (what `tunewright eval` does)")

    def say(line: str) -> None:  # lines name data files and models: never print a credential in them
        echo(redact(line))

    out_dir = Path(out_dir or cfg.out_dir())
    earlier = earlier_eval_files(out_dir, cfg.output.overwrite, cfg.default_name())
    rows, counts, task_data = task.rows(cfg)  # bad data stops before any folder is made or file removed
    _make_out_dir(out_dir, earlier)
    say(f"{cfg.data.path}: {counts.used} rows (read {counts.read}, bad {counts.bad}, "
        f"skipped {counts.skipped}, cut {counts.cut})")

    candidates, predictions, settings = [], {}, {}
    for c in cfg.candidates:
        t0 = time.perf_counter()
        result = task.run(cfg, c, rows, task_data)  # one model in memory at a time: loaded, asked, freed
        gc.collect()
        preds, corpus, per_example, settings = result.outputs, result.corpus, result.per_example, result.settings
        outputs = f"outputs-{c.name}.jsonl"
        _write_outputs(out_dir / outputs, rows, preds, per_example)
        predictions[c.name] = preds
        candidates.append({"name": c.name, "source": c.source(), "run": c.run, "scores": corpus,
                           **({"groups": _group_scores(cfg, rows, preds)} if cfg.data.group_by else {}),
                           "outputs": outputs, "seconds": round(time.perf_counter() - t0, 2)})
        say(f"{c.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in corpus.items()))

    base = candidates[0]["scores"]
    for cand in candidates[1:]:
        cand["improvement"] = improvement(base, cand["scores"])
    shown = min(cfg.output.samples, len(rows))
    results = {
        "task": cfg.task,
        **({"how": task.describe(cfg)} if task.describe(cfg) else {}),
        "data": {"path": cfg.data.path, "format": cfg.data.format, **asdict(counts),
                 **{k: v for k, v in (("group_by", cfg.data.group_by), ("shots", cfg.data.shots),
                                      ("shots_from", cfg.data.shots_from)) if v}},
        "generation": cfg.generation.model_dump(mode="json"),
        "metrics": settings,
        "baseline": candidates[0]["name"],
        "candidates": candidates,
        "samples": [{"line": rows[i].line, "prompt": rows[i].prompt, "reference": rows[i].reference,
                     "outputs": {name: predictions[name][i] for name in predictions}} for i in range(shown)],
        "config": cfg.model_dump(mode="json"),
    }
    runs = {c.name: Path(c.run) for c in cfg.candidates if c.run}
    results = write_compare_report(out_dir, results, runs)
    say(f"report: {out_dir / 'report.md'}")
    return Comparison(out_dir, results, predictions)
