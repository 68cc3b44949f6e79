"""The whole data path of a run: sources -> splits -> tokens -> batches, with its report.

Tokenization runs on the main process first and lands in the cache; the other ranks then read
the cache, so a distributed run tokenizes once.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

from tunewright.data import batching, cache, mixture, packing, tokenize
from tunewright.data.seq2seq import collate_seq2seq, encode_seq2seq_examples
from tunewright.data.types import Encoded

__all__ = ["PreparedData", "prepare_data", "make_collate", "make_plan"]


@dataclass
class PreparedData:
    train: list[Encoded]
    eval: list[Encoded]
    report: list[str] = field(default_factory=list)  # lines for the console and validate
    train_stats: object = None
    eval_stats: object = None
    split_report: object = None
    eval_examples: list = field(default_factory=list)  # formatted rows, for generation/scoring metrics


def _tokenize(examples, tokenizer, template, cfg, kind: str, role: str):
    key = {"examples": examples, "role": role, "kind": kind}
    if kind == "seq2seq":
        build = partial(encode_seq2seq_examples, examples, tokenizer, template, cfg)
    else:
        build = partial(tokenize.tokenize_examples, examples, tokenizer, template, cfg)
    return cache.cached_tokenize(key, tokenizer, template, cfg, build)


def prepare_data(cfg, tokenizer, template: str, kind: str, accelerator=None) -> PreparedData:
    """Load, split and tokenize the data of `cfg` (a RunConfig) for a model of `kind`."""
    train_ex, eval_ex, split_report = mixture.build_splits(cfg.data, seed=cfg.train.seed)
    with accelerator.main_process_first() if accelerator is not None else nullcontext():
        train, train_stats = _tokenize(train_ex, tokenizer, template, cfg.data, kind, "train")
        if eval_ex:
            evals, eval_stats = _tokenize(eval_ex, tokenizer, template, cfg.data, kind, "eval")
        else:
            evals, eval_stats = [], None
    report = [*split_report.lines(), *_labelled("train", train_stats.lines())]
    if eval_stats is not None:
        report += _labelled("eval", eval_stats.lines())
    return PreparedData(train, evals, report, train_stats, eval_stats, split_report, eval_ex)


def _labelled(label: str, lines: list[str]) -> list[str]:
    return [f"{label}: {lines[0]}", *(f"{' ' * len(label)}  {line}" for line in lines[1:])] if lines else []


def make_collate(kind: str, packed: bool, pad_id: int):
    """micro-batch (rows of Encoded) -> tensors for the objective."""
    if kind == "seq2seq":
        return lambda rows: collate_seq2seq([r[0] for r in rows], pad_id)
    if packed:
        return lambda rows: packing.collate_packed(rows, pad_id)
    return lambda rows: packing.collate_padded([r[0] for r in rows], pad_id, side="right")


def make_plan(encoded: list[Encoded], data_cfg, micro_batch_size: int, seed: int, packed: bool):
    """epoch -> micro-batches, each a list of rows, each row a list of Encoded."""
    lengths = [len(e.input_ids) for e in encoded]

    def plan(epoch: int) -> list[list[list[Encoded]]]:
        batches = batching.plan_batches(lengths, micro_batch_size, seed=seed, epoch=epoch,
                                        group_by_length=data_cfg.group_by_length, packing=packed,
                                        max_len=data_cfg.cutoff_len)
        return [[[encoded[i] for i in row] for row in mb] for mb in batches]

    return plan
