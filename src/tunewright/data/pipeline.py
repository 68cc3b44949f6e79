"""The whole data path of a run: sources -> splits -> tokens -> batches, with its report.

How a row becomes token sequences and a micro-batch tensors is the objective's (`encode`,
`collate`, objectives/__init__.py); this module runs it over the data, through the tokenization
cache. Tokenization runs on the main process first and lands in the cache; the other ranks then
read the cache, so a distributed run tokenizes once.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

from tunewright.data import batching, cache, mixture, tokenize
from tunewright.data.types import Encoded

__all__ = ["PreparedData", "prepare_data", "make_plan"]


@dataclass
class PreparedData:
    train: list[Encoded]
    eval: list[Encoded]
    report: list[str] = field(default_factory=list)  # lines for the console and validate
    train_stats: object = None
    eval_stats: object = None
    split_report: object = None
    eval_examples: list = field(default_factory=list)  # formatted rows, for generation/scoring metrics
    tokenizer: object = None  # what the rows were tokenized with (rollout objectives decode their samples)
    template: str = ""
    cache_dir: object = None  # the data cache's folder: objectives keep values computed from the rows beside it


def _tokenize(examples, tokenizer, template, data_cfg, objective, role: str):
    name = objective.Config.model_fields["name"].default
    build = partial(tokenize.tokenize_examples, examples, tokenizer, template, data_cfg, objective.encode)
    return cache.cached_tokenize({"examples": examples, "role": role, "objective": name}, tokenizer, template,
                                 data_cfg, build)


def prepare_data(data_cfg, seed: int, tokenizer, template: str, objective, accelerator=None) -> PreparedData:
    """Load, split (seeded) and tokenize `data_cfg`'s sources the way `objective` encodes rows."""
    train_ex, eval_ex, split_report = mixture.build_splits(data_cfg, seed=seed)
    with accelerator.main_process_first() if accelerator is not None else nullcontext():
        train, train_stats = _tokenize(train_ex, tokenizer, template, data_cfg, objective, "train")
        if eval_ex:
            evals, eval_stats = _tokenize(eval_ex, tokenizer, template, data_cfg, objective, "eval")
        else:
            evals, eval_stats = [], None
    report = [*split_report.lines(), *_labelled("train", train_stats.lines())]
    if eval_stats is not None:
        report += _labelled("eval", eval_stats.lines())
    return PreparedData(train, evals, report, train_stats, eval_stats, split_report, eval_ex, tokenizer, template,
                        cache.cache_root(data_cfg))


def _labelled(label: str, lines: list[str]) -> list[str]:
    return [f"{label}: {lines[0]}", *(f"{' ' * len(label)}  {line}" for line in lines[1:])] if lines else []


def make_plan(encoded: list[Encoded], data_cfg, micro_batch_size: int, seed: int, packed: bool):
    """epoch -> micro-batches, each a list of rows, each row a list of Encoded."""
    lengths = [len(e.input_ids) for e in encoded]

    def plan(epoch: int) -> list[list[list[Encoded]]]:
        batches = batching.plan_batches(lengths, micro_batch_size, seed=seed, epoch=epoch,
                                        group_by_length=data_cfg.group_by_length, packing=packed,
                                        max_len=data_cfg.cutoff_len)
        return [[[encoded[i] for i in row] for row in mb] for mb in batches]

    return plan
