"""What the preference objectives (dpo, kto) share: encoding a prompt with its answers, batching
them, and the log-probability of each answer through a chunked output projection.

Encoding. The prompt is encoded by generate's own code (`encode_prompt`: the conversation plus the
assistant header), so its tokens are the same in the chosen and the rejected sequence and equal
what `tunewright generate` feeds the model. Each answer is the rest of the conversation prompt +
answer as the causal-LM encoding makes it (trained tokens, end of turn, EOS). Lengths:

    prompt   longer than data.max_prompt_len: cut from the left (the end, next to the answer, stays)
    answers  cut on the right to data.cutoff_len - len(prompt) (truncation: drop drops the row instead)

and a row is dropped, and counted (reasons in data/tokenize.py's DROP_REASONS), when its chosen and
rejected answer are the same text, when an answer has fewer than data.min_response_words words, or
when the prompt leaves no answer token.

Log-probabilities. log p(answer | prompt) = sum over answer tokens of log softmax(W h_t)[y_{t+1}].
Only the rows of hidden states that predict an answer token go through the output projection,
`chunk_size` rows at a time, each chunk under activation checkpointing (its logits are recomputed in
backward): [batch, seq, vocab] logits never exist. causal_lm's fused path computes gradients in
forward for a loss whose weight on every token is the same; here each answer's tokens get a
different weight (the derivative of the preference loss), known only in backward, so the chunks
are recomputed instead.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.checkpoint import checkpoint

from tunewright.data import report, templates, tokenize
from tunewright.data.packing import collate_padded
from tunewright.data.types import IGNORE_INDEX, Encoded, Example
from tunewright.errors import DataError
from tunewright.objectives import reference as references
from tunewright.objectives.causal_lm import CHUNK_SIZE, ChunkSize, hidden_states, split_head

__all__ = ["Reference", "ChunkSize", "CHUNK_SIZE", "encode_answers", "second", "collate_rows", "row_keys",
           "token_logps", "sequence_logps", "disable_dropout", "make_reference", "precompute_logps", "misfit",
           "end_ids", "render"]

Reference = Annotated[Literal["adapter_disabled", "frozen_copy", "precomputed"] | None, Field(description=(
    "The frozen reference policy: `adapter_disabled` (the model with its LoRA adapter off: no second copy; the "
    "default with an adapter method), `frozen_copy` (a frozen copy of the starting model; the default otherwise), "
    "`precomputed` (reference log-probs of every row computed once before training, then no reference model "
    "is kept; stored in the data cache, so a resume or a rerun on the same model and rows reads them back)."))]


# ---------------------------------------------------------------- encoding

def _words(turns) -> int:
    return sum(len(m.content.split()) for m in turns)


def _answer(example: Example, turns, prompt_ids: list[int], tokenizer, template: str, cfg) -> tuple[list, list]:
    """(ids, labels) of one answer: what follows the prompt in the encoded conversation."""
    whole = Example(example.source, example.line, messages=[*example.messages, *turns])
    # no cut here: the lengths are decided below, for the prompt and the answers together
    loose = cfg.model_copy(update={"cutoff_len": 1 << 40, "truncation": "truncate", "train_on_inputs": False})
    encoded = tokenize.encode(whole, tokenizer, template, loose)
    if isinstance(encoded, str) or encoded.input_ids[:len(prompt_ids)] != prompt_ids:
        # a template that renders a conversation's start differently once an answer follows
        raise DataError(example.source, example.line, None,
                        "the template renders the prompt differently when an answer follows it; the prompt "
                        "tokens would differ from generate's (use a template whose turns render independently)")
    return encoded.input_ids[len(prompt_ids):], encoded.labels[len(prompt_ids):]


def encode_answers(example: Example, tokenizer, template: str, cfg) -> Encoded | str:
    """A preference (2 responses) or unpaired (1 response) example -> Encoded, or a drop reason.

    input_ids/labels: the prompt and the first answer (labels IGNORE_INDEX on the prompt);
    meta: prompt_len, and `rejected`/`rejected_labels` (the second answer's tokens, without the
    prompt) for a pair, `label` (desirable) for an unpaired row, `truncated` when anything was cut.
    """
    if example.responses is None:
        raise DataError(example.source, example.line, None,
                        "not a preference row (use data format preference, ranked or unpaired)")
    answers = example.responses
    if len(answers) == 2 and [(m.role, m.content) for m in answers[0]] == [(m.role, m.content) for m in answers[1]]:
        return "identical_pair"
    if any(_words(turns) < cfg.min_response_words for turns in answers):
        return "short_response"
    prompt = tokenize.encode_prompt(example.messages, tokenizer, template, system_prompt=cfg.system_prompt)
    pieces = [_answer(example, turns, prompt, tokenizer, template, cfg) for turns in answers]
    truncated = False
    if cfg.max_prompt_len and len(prompt) > cfg.max_prompt_len:
        prompt, truncated = prompt[-cfg.max_prompt_len:], True
    room = cfg.cutoff_len - len(prompt)
    if any(len(ids) > room for ids, _ in pieces):
        if cfg.truncation == "drop":
            return "too_long"
        pieces, truncated = [(ids[:room], labels[:room]) for ids, labels in pieces], True
        if room <= 0 or any(all(x == IGNORE_INDEX for x in labels) for _, labels in pieces):
            return "completion_cut"
    (ids, labels), rest = pieces[0], pieces[1:]
    meta: dict = {"prompt_len": len(prompt)}
    if rest:
        meta["rejected"], meta["rejected_labels"] = rest[0]
    if example.label is not None:
        meta["label"] = example.label
    if truncated:
        meta["truncated"] = True
    return Encoded(prompt + ids, [IGNORE_INDEX] * len(prompt) + labels, example.source, example.line, meta)


def second(e: Encoded) -> Encoded:
    """The rejected sequence of a pair: the same prompt tokens, the second answer."""
    p = e.meta["prompt_len"]
    return Encoded(e.input_ids[:p] + e.meta["rejected"], [IGNORE_INDEX] * p + e.meta["rejected_labels"],
                   e.source, e.line)


def row_keys(encoded: list[Encoded]) -> torch.Tensor:
    """A stable 63-bit key per row, from its tokens: what precomputed reference values are stored under."""
    keys = []
    for e in encoded:
        h = hashlib.blake2b(repr((e.input_ids, e.meta.get("rejected"))).encode(), digest_size=8).digest()
        keys.append(int.from_bytes(h, "little") >> 1)
    return torch.tensor(keys, dtype=torch.int64)


def collate_rows(sequences: list[Encoded], pad_id: int) -> dict:
    """Sequences, one a row, padded on the right: input_ids, labels, attention_mask [R, T], num_tokens."""
    batch = collate_padded(sequences, pad_id, side="right")
    batch["num_tokens"] = int(batch["attention_mask"].sum())
    return batch


def render(encoded: Encoded, tokenizer) -> str:
    text = report.render_marked(encoded, tokenizer)
    if "rejected" in encoded.meta:
        return f"chosen:\n{text}\nrejected:\n{report.render_marked(second(encoded), tokenizer)}"
    if "label" in encoded.meta:
        return f"{'desirable' if encoded.meta['label'] else 'undesirable'}:\n{text}"
    return text


def end_ids(tokenizer, template: str) -> list[int]:
    return templates.end_of_turn_ids(tokenizer, template)


def misfit(run_cfg, name: str) -> str | None:
    if run_cfg.data.train_on_inputs:
        return (f"data.train_on_inputs: objective {name!r} compares the answers' log-probabilities given the "
                "prompt; the prompt is never scored. Remove it")
    return None


# ---------------------------------------------------------------- log-probabilities

def _chunk_logps(hidden: torch.Tensor, targets: torch.Tensor, head, softcap) -> torch.Tensor:
    logits = head(hidden).float()  # [rows, vocab]
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


def token_logps(hidden: torch.Tensor, targets: torch.Tensor, head, chunk_size: int,
                softcap: float | None = None) -> torch.Tensor:
    """log softmax(head(hidden))[targets] per row [N], `chunk_size` rows through the head at a time."""
    pieces = [(hidden.sum() * 0).float().reshape(1)[:0]]  # keeps backward reaching `hidden` with no rows
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start:start + chunk_size], targets[start:start + chunk_size]
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_logps, h, y, head, softcap, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(h, y, head, softcap))
    return torch.cat(pieces)


def sequence_logps(model, batch: dict, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of each row's trained tokens [R] fp32, their number [R]) for a padded batch."""
    decoder, head, softcap = split_head(model)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    hidden = hidden_states(model, inputs, decoder)  # [R, T, d]
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX  # [R, T-1]
    logps = token_logps(hidden[:, :-1][keep], targets[keep], head, chunk_size, softcap)  # [N]
    row = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)[keep]
    sums = torch.zeros(keep.shape[0], dtype=torch.float32, device=logps.device).index_add(0, row, logps)
    return sums, keep.sum(1)


# ---------------------------------------------------------------- the model and its reference

_DROPOUT_RATES = ("attention_dropout", "hidden_dropout", "dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop",
                  "dropout_rate", "attention_probs_dropout_prob", "hidden_dropout_prob")


def disable_dropout(model) -> None:
    """Dropout off in every layer (as TRL does): with it on, policy and reference differ at step 1.

    nn.Dropout modules get p = 0; attention layers that call dropout functionally keep the rate as a
    float attribute copied from the config at init (Llama's `attention_dropout`), so those floats are
    zeroed on every module and on the configs.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        targets = [module] + ([module.config] if getattr(module, "config", None) is not None else [])
        for target in targets:
            for key in _DROPOUT_RATES:
                if isinstance(getattr(target, key, None), float):
                    setattr(target, key, 0.0)


def make_reference(model, kind: str | None):
    """The frozen reference the config names, defaulting to adapter_disabled for adapter methods."""
    # run.py passes the prepared model: under DDP the PEFT model (and its disable_adapter) is inside;
    # the reference runs without gradients, so it needs none of DDP's hooks
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if kind is None:
        kind = "adapter_disabled" if hasattr(model, "disable_adapter") else "frozen_copy"
    if kind == "frozen_copy":
        return references.frozen_copy(model)
    return references.adapter_disabled(model)


def precompute_logps(ref, sequences_of, encoded: list[Encoded], pad_id: int, chunk_size: int,
                     batch_size: int = 8) -> dict[int, torch.Tensor]:
    """{row key: reference log-probs of its sequences [k]} over `encoded`, `batch_size` rows a pass."""
    values: dict[int, torch.Tensor] = {}
    for start in range(0, len(encoded), batch_size):
        rows = encoded[start:start + batch_size]
        seqs = [s for e in rows for s in sequences_of(e)]
        batch = collate_rows(seqs, pad_id)
        device = next(ref.model.parameters()).device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        logps = ref(lambda m: sequence_logps(m, batch, chunk_size)[0]).cpu().view(len(rows), -1)  # [rows, k]
        for key, lp in zip(row_keys(rows).tolist(), logps):
            values[key] = lp.clone()
    return values
