"""Next-token cross-entropy for causal LMs, chunked so full-vocabulary logits never exist at once.

loss = sum over target positions t of -log softmax(W h_t)[y_{t+1}]

A 135M model with a 49k vocabulary at batch 8 x 2048 would hold 8*2048*49152*4 B = 3.2 GB of fp32
logits (twice, with their gradient). We run the decoder for hidden states, keep only positions whose
next token is a target, and send them through the output projection `chunk_size` rows at a time
under activation checkpointing: each chunk's logits are recomputed in backward instead of stored,
so peak logit memory is chunk_size * vocab floats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunewright.data.types import IGNORE_INDEX

__all__ = ["loss", "count_targets", "chunked_cross_entropy", "split_head", "hidden_states"]


def count_targets(batch: dict) -> int:
    """Positions that predict a target token: labels shifted left by one, excluding -100."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def split_head(model):
    """(decoder stack, output projection, softcap) of a causal LM, looking through a PEFT wrapper."""
    base = getattr(model, "module", model)  # DDP / FSDP wrapper
    base = base.get_base_model() if hasattr(base, "get_base_model") else base  # PEFT wrapper
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return base.get_decoder(), base.get_output_embeddings(), softcap


def _chunk_loss(hidden: torch.Tensor, targets: torch.Tensor, head, softcap) -> torch.Tensor:
    logits = head(hidden).float()  # [rows, vocab]
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, head, chunk_size: int,
                          softcap: float | None = None) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` [N, vocab] against `targets` [N], chunk by chunk."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start:start + chunk_size], targets[start:start + chunk_size]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, h, y, head, softcap, use_reentrant=False)
        else:
            total = total + _chunk_loss(h, y, head, softcap)
    return total


def hidden_states(model, inputs: dict, decoder) -> torch.Tensor:
    """The decoder stack's output [B, T, d], from a forward through the *outer* model.

    Calling the decoder directly would skip the wrapper's forward: DDP prepares its gradient
    all-reduce there (skipping it, ranks silently train on their own gradients) and FSDP gathers
    weights there. So we run the whole model, asking for the logits of one position only
    (`logits_to_keep=1`: [B, 1, vocab], negligible), and catch the decoder's output with a hook.
    """
    caught = []
    handle = decoder.register_forward_hook(lambda module, args, out: caught.append(out[0]))
    try:
        # use_cache=False matters beyond memory: transformers infers packed sequences from
        # position_ids only when there is no cache; with one, packed examples attend to each other.
        model(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return caught[-1]


def loss(model, batch: dict, cfg) -> tuple[torch.Tensor, dict]:
    """batch: input_ids [B, T], labels [B, T] (unshifted), attention_mask [B, T] or position_ids
    [B, T] for packed rows. Returns the summed loss over target tokens and their count."""
    decoder, head, softcap = split_head(model)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    hidden = hidden_states(model, inputs, decoder)  # [B, T, d]
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    rows = hidden[:, :-1][keep]  # [N, d]: only positions that predict a target
    total = chunked_cross_entropy(rows, targets[keep], head, cfg.chunk_size, softcap)
    return total, {"tokens": int(keep.sum())}
