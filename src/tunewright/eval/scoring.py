"""Evaluation without generation: score a fixed set of continuations by their log-likelihood.

For a context c and a continuation y = (y_1 .. y_L), the model's score is the summed token
log-likelihood

    log p(y | c) = sum_t log softmax(logits(c, y_<t))[y_t]            (nats)

and a label set {y^1 .. y^K} becomes a distribution by a softmax restricted to the labels:
P(y^k | c) = exp(log p(y^k | c)) / sum_j exp(log p(y^j | c)). When every label is one token this
is the next-token distribution restricted to the label ids, read from a single forward of the
context; otherwise each (context, label) pair takes one forward, in batches (as in lm-eval-harness
and HELM's classification-by-likelihood).

Prompts are encoded like generation encodes them (`tunewright.eval.generate.prompt_ids`: the
training template plus the assistant header), and labels on their own without special tokens,
as the training code tokenizes a reply, so the scored tokens are those the model was trained on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from tunewright.errors import ConfigError, DataError
from tunewright.training import stop as stop_signal

__all__ = ["Scored", "continuation_log_likelihoods", "position_limit", "label_probabilities", "score_classification",
           "label_index"]


@dataclass
class Scored:
    """Log-likelihoods of continuations, one row per context."""

    log_likelihood: list[torch.Tensor]  # per context: [K_i] summed log p(continuation | context), nats
    tokens: list[list[int]]  # per context: the token count of each continuation
    truncated: int = 0  # contexts cut on the left to fit the model's positions
    sequences: int = 0  # sequences run through the model (one per context when all continuations are one token)


@dataclass
class _Job:
    """One sequence for the model: `context` followed by the scored tokens.

    single-token shortcut (`choice` None): read log p(t | context) for every candidate t in `targets`;
    otherwise: read log p of `targets` in order, given context + the targets before each."""

    item: int
    choice: int | None
    context: list[int]
    targets: list[int]


def continuation_log_likelihoods(model, contexts: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]],
                                 *, batch_size: int = 8, max_length: int | None = None) -> Scored:
    """log p(continuation | context) for each context's candidate continuations (token ids).

    contexts: N id lists; continuations: per context, K_i non-empty id lists. Decoder-only models
    see `context + continuation[:-1]`, left-padded so all rows end together and only the last
    positions' logits ([batch, L_max, vocab]) are computed; encoder-decoder models encode the
    context and teacher-force the continuation in the decoder. A context longer than
    `max_length` (default: the model's position limit) is cut on the left, and counted.
    """
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    max_length = position_limit(model) if max_length is None else max_length
    jobs: list[_Job] = []
    truncated: set[int] = set()
    for i, (context, options) in enumerate(zip(contexts, continuations, strict=True)):
        if not options or any(not c for c in options):
            raise ValueError(f"context {i}: every context needs at least one non-empty continuation")
        if all(len(c) == 1 for c in options):  # one forward reads every candidate's next-token log-prob
            wanted = [(None, [c[0] for c in options])]
        else:
            wanted = list(enumerate(options))
        for choice, targets in wanted:
            kept = list(context)
            if max_length is not None:
                # decoder-only: the last target is never fed in, so the sequence is context + L - 1 tokens
                room = max_length - (0 if encoder_decoder or choice is None else len(targets) - 1)
                if room < 1:
                    raise ValueError(f"context {i}: a {len(targets)}-token continuation does not fit in "
                                     f"{max_length} positions")
                if len(kept) > room:
                    kept = kept[len(kept) - room:]
                    truncated.add(i)
            jobs.append(_Job(i, choice, kept, list(targets)))

    scores = [torch.zeros(len(options)) for options in continuations]
    run = _run_encoder_decoder if encoder_decoder else _run_decoder
    # longest first: similar lengths share a batch, so little compute goes to padding
    jobs.sort(key=lambda j: len(j.context) + len(j.targets), reverse=True)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(jobs), batch_size):
                stop_signal.check()  # a stop signal during training abandons the scoring (training/stop.py)
                batch = jobs[start:start + batch_size]
                for job, values in zip(batch, run(model, batch)):
                    if job.choice is None:
                        scores[job.item] = values
                    else:
                        scores[job.item][job.choice] = values.sum()
    finally:
        model.train(was_training)
    return Scored(scores, [[len(c) for c in options] for options in continuations], len(truncated), len(jobs))


def position_limit(model) -> int | None:
    """The longest decoder-only input the model can position (None: no limit known, or an
    encoder-decoder whose relative positions have none)."""
    if getattr(model.config, "is_encoder_decoder", False):
        return None
    return getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _gather(logprobs: torch.Tensor, job: _Job) -> torch.Tensor:
    """logprobs [L, vocab] at the positions that predict the job's targets -> [L] (or [K] candidates)."""
    targets = torch.tensor(job.targets, device=logprobs.device)
    if job.choice is None:
        return logprobs[-1, targets].cpu()
    return logprobs.gather(-1, targets[:, None])[:, 0].cpu()


def _run_decoder(model, batch: list[_Job]) -> list[torch.Tensor]:
    """Decoder-only: one left-padded forward of `context + targets[:-1]` per job."""
    seqs = [j.context + (j.targets[:-1] if j.choice is not None else []) for j in batch]
    reads = [1 if j.choice is None else len(j.targets) for j in batch]
    width, keep = max(map(len, seqs)), max(reads)
    device = _device(model)
    input_ids = torch.zeros(len(seqs), width, dtype=torch.long, device=device)
    mask = torch.zeros_like(input_ids)
    for row, seq in enumerate(seqs):
        input_ids[row, width - len(seq):] = torch.tensor(seq, device=device)
        mask[row, width - len(seq):] = 1
    # positions count real tokens only, so a left-padded row is computed as if it stood alone
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = dict(input_ids=input_ids, attention_mask=mask, position_ids=position_ids)
    try:  # only the last `keep` positions' logits: [batch, keep, vocab] instead of [batch, seq, vocab]
        logits = model(**kwargs, logits_to_keep=keep).logits
    except TypeError as e:  # a model whose forward has no logits_to_keep: full logits, then the slice
        if "logits_to_keep" not in str(e):
            raise
        logits = model(**kwargs).logits
    logprobs = torch.log_softmax(logits[:, -keep:].float(), dim=-1)  # [batch, keep, vocab]
    return [_gather(logprobs[row, keep - n:], job) for row, (job, n) in enumerate(zip(batch, reads))]


def _run_encoder_decoder(model, batch: list[_Job]) -> list[torch.Tensor]:
    """Encoder-decoder: the context in the encoder, [start] + targets[:-1] in the decoder."""
    start = model.config.decoder_start_token_id
    if start is None:
        start = model.config.pad_token_id
    decoder = [[start] + (j.targets[:-1] if j.choice is not None else []) for j in batch]
    device = _device(model)
    enc_width, dec_width = max(len(j.context) for j in batch), max(map(len, decoder))
    input_ids = torch.zeros(len(batch), enc_width, dtype=torch.long, device=device)
    mask = torch.zeros_like(input_ids)
    decoder_ids = torch.zeros(len(batch), dec_width, dtype=torch.long, device=device)
    for row, (job, dec) in enumerate(zip(batch, decoder)):
        input_ids[row, :len(job.context)] = torch.tensor(job.context, device=device)
        mask[row, :len(job.context)] = 1
        decoder_ids[row, :len(dec)] = torch.tensor(dec, device=device)  # right padding: causal, read before it
    logits = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # [batch, dec_width, vocab]
    return [_gather(logprobs[row, :len(dec)], job) for row, (job, dec) in enumerate(zip(batch, decoder))]


# ------------------------------------------------------------------ a label set

def _encode(model, tokenizer, prompts, labels, template, raw, system_prompt) -> tuple[list, list]:
    from tunewright.eval.generate import prompt_ids

    if len(labels) < 2:
        raise ConfigError(f"scoring needs at least two labels, got {list(labels)!r}")
    label_ids = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in labels]
    for label, ids in zip(labels, label_ids):
        if not ids:
            raise ConfigError(f"label {label!r} encodes to no tokens")
    seen: dict[tuple, str] = {}
    for label, ids in zip(labels, label_ids):
        if tuple(ids) in seen:  # identical tokens would always score the same
            raise ConfigError(f"labels {seen[tuple(ids)]!r} and {label!r} encode to the same tokens {ids}")
        seen[tuple(ids)] = label
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    contexts = [prompt_ids(p, tokenizer, template, raw or encoder_decoder, system_prompt) for p in prompts]
    return contexts, label_ids


def _label_scores(model, tokenizer, prompts, labels, template, batch_size, raw, system_prompt, max_length) -> Scored:
    contexts, label_ids = _encode(model, tokenizer, prompts, labels, template, raw, system_prompt)
    scored = continuation_log_likelihoods(model, contexts, [label_ids] * len(contexts),
                                          batch_size=batch_size, max_length=max_length)
    if scored.truncated:
        warnings.warn(f"{scored.truncated} of {len(contexts)} prompts were cut on the left to fit the model")
    return scored


def label_probabilities(model, tokenizer, prompts: Sequence, labels: Sequence[str], template: str | None = None,
                        batch_size: int = 8, *, raw: bool = False, system_prompt: str | None = None,
                        max_length: int | None = None) -> torch.Tensor:
    """P(label | prompt) among `labels`, [N, n_labels] (rows sum to 1).

    A label's score is the summed log-likelihood of its tokens after the prompt (rendered with
    `template` like generation does; raw text when `raw` or no template). Labels are tokenized
    on their own, so in raw mode write the leading space a label needs (" Yes").
    """
    if not prompts:
        return torch.zeros(0, len(labels))
    scored = _label_scores(model, tokenizer, prompts, labels, template, batch_size, raw, system_prompt, max_length)
    return torch.softmax(torch.stack(scored.log_likelihood), dim=-1)


def score_classification(model, tokenizer, prompts: Sequence, labels: Sequence[str], references: Sequence,
                         template: str | None = None, batch_size: int = 8, *, positive: str | None = None,
                         raw: bool = False, system_prompt: str | None = None, max_length: int | None = None,
                         source: str = "<references>") -> dict:
    """Accuracy, macro F1 and ROC AUC of the label probabilities against `references` (label
    strings or indices into `labels`). AUC: binary uses P(`positive`) (default: `labels[1]`, as
    class 1 of 0/1); more labels use one-vs-rest over the probability rows.

    Returns {"accuracy", "macro_f1", "auc", "n", "truncated"}. A reference that is not a label
    raises DataError(source, its 1-based position, "label", ...).
    """
    from tunewright.eval.labels import label_metrics

    labels = list(labels)
    if len(prompts) != len(references) or not prompts:
        raise ValueError(f"need equally many prompts and references, at least one (got {len(prompts)} "
                         f"and {len(references)})")
    truth = [label_index(ref, labels, source, line) for line, ref in enumerate(references, start=1)]
    if positive is not None and positive not in labels:
        raise ConfigError(f"positive label {positive!r} is not one of the labels {labels!r}")
    scored = _label_scores(model, tokenizer, prompts, labels, template, batch_size, raw, system_prompt, max_length)
    probs = torch.softmax(torch.stack(scored.log_likelihood), dim=-1)  # [N, K]
    positive_id = labels.index(positive) if positive is not None else 1
    return {**label_metrics(probs, truth, positive_id), "n": len(truth), "truncated": scored.truncated}


def label_index(reference, labels: list[str], source: str, line: int) -> int:
    """The index of `reference` (a label, or an index already) in `labels`; DataError naming the row."""
    if isinstance(reference, int) and not isinstance(reference, bool) and 0 <= reference < len(labels):
        return reference
    if isinstance(reference, str) and reference in labels:
        return labels.index(reference)
    raise DataError(source, line, "label", f"{reference!r} is not one of the labels {labels!r} (or an index 0-"
                                           f"{len(labels) - 1})")
