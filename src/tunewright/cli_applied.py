"""The applied fine-tuning commands of the command line (cli.py registers them on its app):

    tunewright predict RUN --data F                     a classification head's label and probabilities per row
    tunewright data ratings FILE --out DIR              ratings -> Yes/No recommendation prompts, split in time
    tunewright data pairs MODEL --prompts F --out P     two seeded sampled answers per prompt (data/collect.py)
    tunewright data label P --out F                     label pairs in the terminal (resumable), or import a
                                                        Label Studio export, or judge two eval candidates
    tunewright recommend RUN --ratings F --user U       a recommender's top k for a user, hit@k and NDCG@k
    tunewright report tabular|recommender --out DIR     the recorded tables of the README (applied/)

As everywhere in the CLI, a TunewrightError becomes one line and exit code 2 (cli.main).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from tunewright.errors import TunewrightError

__all__ = ["predict", "recommend", "data_app", "report_app"]


def predict(run: str = typer.Argument(..., help="A classification run folder (its final/), or a trained folder"),
            data: Path = typer.Option(..., "--data", help="Rows to classify, in the run's data format"),
            out: Optional[Path] = typer.Option(None, "--out", help="A new jsonl file (default: print the lines)"),
            data_format: Optional[str] = typer.Option(None, "--format", help="Row format (default: the run's)")):
    """A classification head's label and class probabilities for every row of a file (jsonl)."""
    from tunewright.eval.predict import predict_file
    predict_file(run, data, out, data_format, echo=typer.echo)
    if out is not None:
        typer.echo(f"predictions written to {out}")


def _ratings_options(threshold: float, history: int, test_fraction: float, val_fraction: float,
                     columns: Optional[str]):
    from tunewright.data.ratings import RatingsOptions

    mapping = {}
    for item in (columns or "").split(","):
        if item.strip():
            ours, sep, theirs = item.partition("=")
            if not sep or not theirs.strip():
                raise TunewrightError(f"--columns: expected ours=theirs pairs, e.g. user=userId,item=title (got {item!r})")
            mapping[ours.strip()] = theirs.strip()
    return RatingsOptions(threshold, history, test_fraction, val_fraction, mapping)


THRESHOLD = typer.Option(4.0, help="A rating at or above it is a like (Yes)")
HISTORY = typer.Option(5, help="Most recent liked items, and as many disliked, shown in a prompt")
TEST_FRACTION = typer.Option(0.2, help="Each user's last share of ratings held out for test")
VAL_FRACTION = typer.Option(0.1, help="The share before the test part, for validation")
COLUMNS = typer.Option(None, help="The file's column names, e.g. user=userId,item=title,time=timestamp")

data_app = typer.Typer(no_args_is_help=True, help=(
    "Build training rows: ratings into Yes/No prompts, self-instruct, preference pairs and their labels."))


@data_app.command("pairs")
def data_pairs(model: str = typer.Argument(..., help="A model or a run folder to sample from"),
               prompts: Path = typer.Option(..., "--prompts", help="jsonl rows with a `prompt` string"),
               out: Path = typer.Option(..., "--out", help="The pairs file to write (jsonl)"),
               seed: int = typer.Option(0, help="Seed of the first sample (the second: seed + 1)"),
               temperature: float = typer.Option(1.0), top_p: float = typer.Option(0.95),
               max_new_tokens: int = typer.Option(128),
               template: Optional[str] = typer.Option(
                   None, help="Prompt template (default: the run's, or the tokenizer's)"),
               overwrite: bool = typer.Option(False)):
    """Two sampled answers per prompt -> {prompt, response_1, response_2}; settings in <out>.settings.json."""
    from tunewright.data.collect import sample_pairs

    if temperature <= 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
        raise TunewrightError("data pairs: --temperature must be above 0, --top-p in (0, 1], --max-new-tokens >= 1")
    pairs = sample_pairs(model, prompts, out, seed=seed, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, template=template, overwrite=overwrite)
    typer.echo(f"{len(pairs)} pairs written to {out} (settings: {out}.settings.json); label them with "
               f"`tunewright data label {out} --out prefs.jsonl`")


@data_app.command("label")
def data_label(pairs: Optional[Path] = typer.Argument(None, help="A pairs file, or a candidate's eval outputs file"),
               out: Path = typer.Option(..., "--out", help="Preference jsonl written (appended) by the labeller"),
               against: Optional[Path] = typer.Option(None, "--against", help=(
                   "Another candidate's eval outputs file: judge the two blind, then report the win rate")),
               from_label_studio: Optional[Path] = typer.Option(None, "--from-label-studio", help=(
                   "Import a Label Studio Pairwise project's JSON export instead of labelling")),
               fields: str = typer.Option("prompt,text1,text2", help="Label Studio data keys: prompt,left,right"),
               seed: int = typer.Option(0, help="Seed of the blind order of --against"),
               overwrite: bool = typer.Option(False)):
    """Label pairs in the terminal: 1, 2, tie, skip, quit; run again to resume where it stopped."""
    from tunewright.data import collect

    if from_label_studio is not None:
        keys = tuple(k.strip() for k in fields.split(","))
        if len(keys) != 3 or not all(keys):
            raise TunewrightError(f"--fields: three keys prompt,left,right are needed, got {fields!r}")
        counts = collect.from_label_studio(from_label_studio, out, keys, overwrite)
        typer.echo(f"{counts['tasks']} tasks: {counts['written']} pairs written to {out}, "
                   f"{counts['unlabelled']} without a pairwise choice left out")
        return
    if pairs is None:
        raise TunewrightError("data label: give a pairs file, or --from-label-studio EXPORT")
    rows = collect.candidate_pairs(pairs, against) if against is not None else collect.read_pairs(pairs)
    counts = collect.label(rows, out, read=input, echo=typer.echo, flip_seed=seed if against is not None else None)
    typer.echo(f"this session: {counts['1']} x 1, {counts['2']} x 2, {counts['tie']} ties, {counts['skip']} skipped"
               + (f"; {counts['left']} left for next time" if counts["left"] else ""))
    if against is not None:
        w = collect.win_rate(out)
        if w["n"]:
            typer.echo(f"{pairs.name} over {against.name}: win rate {w['win_rate']:.3f} (95% CI {w['ci95'][0]:.3f}-"
                       f"{w['ci95'][1]:.3f}; {w['wins']} wins, {w['losses']} losses, {w['ties']} ties of {w['n']})")


@data_app.command("ratings")
def data_ratings(path: Path = typer.Argument(..., help="Ratings: user, item, rating and time columns (jsonl/csv/...)"),
                 out: Path = typer.Option(..., help="Folder for train/validation/test.jsonl"),
                 threshold: float = THRESHOLD, history: int = HISTORY, test_fraction: float = TEST_FRACTION,
                 val_fraction: float = VAL_FRACTION, columns: Optional[str] = COLUMNS,
                 overwrite: bool = typer.Option(False)):
    """Ratings -> Yes/No recommendation prompts (liked and disliked history), split in time per user."""
    from tunewright.data.ratings import ratings_to_prompts, read_ratings, write_prompts

    opts = _ratings_options(threshold, history, test_fraction, val_fraction, columns)
    opts.check()
    splits, counts = ratings_to_prompts(read_ratings(path, opts), opts)
    paths = write_prompts(splits, out, overwrite)
    typer.echo(f"{counts['ratings']:,} ratings of {counts['users']:,} users -> train {counts['train']:,}, validation "
               f"{counts['validation']:,}, test {counts['test']:,} prompts ({counts['yes_share']:.1%} Yes; "
               f"{counts['no_history']:,} first ratings without history left out)")
    typer.echo("\n".join(str(p) for p in paths))
    typer.echo("data.datasets[]: {format: classification, columns: {text: prompt}}")


def recommend(run: str = typer.Argument(..., help="A Yes/No recommender run folder (its final/)"),
              ratings: Path = typer.Option(..., help="The ratings file its prompts were made from"),
              user: str = typer.Option(..., help="The user to recommend to"),
              k: int = typer.Option(10, help="How many recommendations"),
              threshold: float = THRESHOLD, history: int = HISTORY, test_fraction: float = TEST_FRACTION,
              val_fraction: float = VAL_FRACTION, columns: Optional[str] = COLUMNS):
    """Rank the items a user has not rated by P(Yes); hit@k and NDCG@k on the user's held-out likes."""
    from tunewright.eval.recommend import recommend as run_recommend

    opts = _ratings_options(threshold, history, test_fraction, val_fraction, columns)
    got = run_recommend(run, ratings, user, k, opts)
    likes = set(got["held_out_likes"])
    for rank, (item, p) in enumerate(got["ranked"][:k], start=1):
        typer.echo(f"{rank:>3}. {p:.3f}  {item}{'  (held-out like)' if item in likes else ''}")
    if likes:
        typer.echo(f"hit@{k} {got[f'hit@{k}']:.0f}, NDCG@{k} {got[f'ndcg@{k}']:.3f} ({len(likes)} held-out likes among "
                   f"{got['candidates']} candidates)")
    else:
        typer.echo(f"{user}: no held-out likes, so hit@{k} and NDCG@{k} are undefined ({got['candidates']} candidates)")


report_app = typer.Typer(no_args_is_help=True, help="The applied fine-tuning reports (tables of the README).")
REPORT_OUT = typer.Option(..., help="A folder for data, runs, evaluations, results.json and report.md")
REPORT_SMOKE = typer.Option(False, "--smoke", help="The recipe's tiny model and a few rows: the grid in seconds")
REPORT_OVERRIDES = typer.Argument(None, help="Overrides of the recipe, e.g. train.max_steps=20")


@report_app.command("tabular")
def report_tabular(out: Path = REPORT_OUT, smoke: bool = REPORT_SMOKE,
                   datasets: Optional[str] = typer.Option(None, help="Comma-separated: lab, breast_cancer, wine, diabetes"),
                   llm_datasets: Optional[str] = typer.Option(
                       None, help="Comma-separated: the datasets that get the LLM rows (default: all)"),
                   max_test: Optional[int] = typer.Option(None, min=2, help="Keep the first N rows of each test split"),
                   overrides: Optional[List[str]] = REPORT_OVERRIDES):
    """Zero-shot, LoRA head and LoRA Yes/No (two templates) against logistic regression and XGBoost."""
    import sys

    from tunewright.applied.tabular_report import run_tabular_report

    def names(text):
        return [d.strip() for d in text.split(",") if d.strip()] if text else None
    got = run_tabular_report(out, names(datasets), smoke=smoke, overrides=overrides or [], max_test=max_test,
                             llm_datasets=names(llm_datasets), command="tunewright " + " ".join(sys.argv[1:]),
                             echo=typer.echo)
    typer.echo(f"{out / 'report.md'} ({got['wall_seconds'] / 60:.1f} min)")


@report_app.command("recommender")
def report_recommender(out: Path = REPORT_OUT, smoke: bool = REPORT_SMOKE,
                       rows: str = typer.Option("300,60,200", help="Lab rows per domain: train,validation,test"),
                       overrides: Optional[List[str]] = REPORT_OVERRIDES):
    """Train on books and on films; AUC on both domains beside the zero-shot base model."""
    import sys

    from tunewright.applied.recommender_report import run_recommender_report
    try:
        sizes = tuple(int(n) for n in rows.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 3 or min(sizes) < 2:
        raise TunewrightError(f"--rows: expected three counts of at least 2, train,validation,test (got {rows!r})")
    got = run_recommender_report(out, smoke=smoke, overrides=overrides or [], sizes=sizes,
                                 command="tunewright " + " ".join(sys.argv[1:]), echo=typer.echo)
    typer.echo(f"{out / 'report.md'} ({got['wall_seconds'] / 60:.1f} min)")
