"""Probes: generative tasks never trained, scored before the first task and after each one, to see
whether training a classifier task after task erases the body's general language skill (issue 18).

R scores the classification head; a probe scores the language model under it:

    zero-shot       the base causal LM itself (the body the first task starts from, its own LM head)
    after task i    task i's final/ classifier's body (its LoRA merged) under the base model's own
                    LM head: generative.pretask_language_model, the model generative replay samples
                    from. The tasks train a classifier, never an LM head, so that head is the base's
                    (with tied embeddings, as SmolLM2's, it is the body's embedding). The `adapters`
                    strategy (one LoRA per task, routed by task name) is probed with the latest task's
                    adapter merged: its final/ is that adapter on the base.

A probe's rows (a prompt and an answer) are encoded once, with the base tokenizer, as a causal-LM
run encodes them (data/tokenize.py: `data.template`, the prompt's labels -100, the answer and its
end of turn kept), so every model sees the same token ids; truncated and dropped rows are counted
and printed. Teacher-forced, one batched forward pass per BATCH_ROWS rows, no generation, fp32 under
no_grad. Over the N answer tokens of a probe (pooled over its rows), t_k the reference token and
z_k the logits [vocab] of the position before it:

    answer_accuracy   1/N · Σ_k [argmax z_k = t_k]
    answer_loss       1/N · Σ_k −log softmax(z_k)[t_k]          (nats per answer token)

The softmax runs over the base tokenizer's ids only: a pad token a classifier added (a row of its
resized embedding, tied to the head) is left out, so every row of P scores the same vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tunewright.data.types import IGNORE_INDEX, Encoded
from tunewright.errors import ConfigError

__all__ = ["ProbeSet", "METRICS", "answer_accuracy", "answer_loss", "encode_probes", "probe_row", "score_probe",
           "zero_shot_language_model", "language_model_after"]

BATCH_ROWS = 8  # rows per forward pass: [8, T, vocab] logits are never built, only [answer tokens, vocab]


def answer_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ_k [argmax z_k = t_k] over logits [N, vocab] and targets [N]: answer tokens predicted right."""
    return (logits.argmax(dim=-1) == targets).sum().double()


def answer_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ_k −log softmax(z_k)[t_k] over logits [N, vocab] and targets [N], in nats."""
    return F.cross_entropy(logits, targets, reduction="sum").double()


# metric name (as `probes[].metric` writes it) -> its sum over answer tokens; the score divides by N
METRICS = {"answer_accuracy": answer_accuracy, "answer_loss": answer_loss}


@dataclass
class ProbeSet:
    """One probe's rows, encoded: `rows` each with input_ids and labels [seq] (-100 on the prompt)."""

    name: str
    metric: str
    rows: list[Encoded]
    vocab: int  # the base tokenizer's ids: the width the softmax runs over


def encode_probes(cfg, say=print) -> list[ProbeSet]:
    """Every probe of the continual config `cfg`, its rows encoded with the base tokenizer and
    `cfg.data.template` as a causal-LM run encodes them; each probe's token counts (rows kept,
    truncated at data.cutoff_len, dropped) printed through `say`."""
    from tunewright.config import DataConfig
    from tunewright.data.mixture import load_examples
    from tunewright.data.templates import prepare_tokenizer, resolve_template
    from tunewright.data.tokenize import tokenize_examples
    from tunewright.models.load import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    vocab = len(tokenizer)
    template = resolve_template(cfg.data.template, tokenizer)
    added = [i for i in prepare_tokenizer(tokenizer, template) if i != tokenizer.pad_token_id]
    if added:  # ids past the base vocabulary: the base LM (the zero-shot probe) has no embedding for them
        raise ConfigError(f"data.template: the probes' template writes tokens the model's vocabulary lacks "
                          f"({', '.join(tokenizer.convert_ids_to_tokens(added))}); choose one it has "
                          f"(data.template: null for the tokenizer's own)")
    sets = []
    for probe in cfg.probes:
        data_cfg = DataConfig(datasets=probe.eval_datasets, cutoff_len=cfg.data.cutoff_len,
                              template=cfg.data.template)
        examples = [ex for src in probe.eval_datasets for ex in load_examples(src, data_cfg)[0]]
        rows, stats = tokenize_examples(examples, tokenizer, template, data_cfg)
        for line in stats.lines()[:2]:  # rows kept, truncated, dropped; tokens scored
            say(f"probe {probe.name}: {line}")
        sets.append(ProbeSet(probe.name, probe.metric, rows, vocab))
    return sets


def score_probe(lm, probe: ProbeSet) -> float:
    """The probe's metric on the causal LM `lm` (teacher-forced, batched; see the module's formulas)."""
    from tunewright.data.packing import collate_padded
    from tunewright.objectives.causal_lm import hidden_states, split_head

    decoder, head, softcap = split_head(lm)
    rows = sorted(probe.rows, key=lambda r: len(r.input_ids))  # rows of like length batched: less padding
    total, count = torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad():
        for start in range(0, len(rows), BATCH_ROWS):
            # padded on the right with id 0: masked out, and labelled -100, so never scored
            batch = collate_padded(rows[start:start + BATCH_ROWS], pad_id=0)
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            hidden = hidden_states(lm, inputs, decoder)  # [B, T, d]
            targets = batch["labels"][:, 1:]  # [B, T-1]: position t predicts token t+1
            keep = targets != IGNORE_INDEX
            logits = head(hidden[:, :-1][keep]).float()[:, :probe.vocab]  # [N, vocab]: answer positions only
            if softcap:
                logits = softcap * torch.tanh(logits / softcap)
            total += METRICS[probe.metric](logits, targets[keep])
            count += int(keep.sum())
    return float(total / count)


def probe_row(lm, sets: list[ProbeSet]) -> list[float]:
    """P's row for the causal LM `lm`: one score per probe, in the config's order."""
    lm = lm.float().eval()
    return [score_probe(lm, probe) for probe in sets]


def zero_shot_language_model(cfg):
    """The base causal LM (the zero-shot probe's model)."""
    from tunewright.models.load import load_model

    return load_model(cfg.model, "causal_lm")


def language_model_after(cfg, ctx):
    """The causal LM probed after task `ctx.index`: its final/ classifier's body under the base's LM head
    (for the adapters strategy, the latest task's adapter merged: its final/ holds that one adapter)."""
    from tunewright.continual.generative import pretask_language_model

    return pretask_language_model(ctx.run_dir / "final", cfg.model)
