"""Next-token cross-entropy for causal LMs, computed so full-vocabulary logits never exist at once.

loss = sum over target positions t of -log softmax(W h_t)[y_{t+1}]

A 135M model with a 49k vocabulary at batch 8 x 2048 would hold 8*2048*49152*4 B = 3.2 GB of fp32
logits (twice, with their gradient). We run the decoder for hidden states, keep only positions whose
next token is a target, and send those rows through the output projection `chunk_size` at a time.
`objective.cross_entropy` picks how (the `CROSS_ENTROPY` dict below):

- fused:   each chunk's logits *and their gradient* are computed in forward and dropped
           (`fused_linear_cross_entropy`): 2 head matmuls per token, chunk_size * vocab logits at most.
- chunked: each chunk runs under activation checkpointing (`chunked_cross_entropy`): its logits are
           recomputed in backward, 3 head matmuls per token, same peak memory.
- full:    all target rows at once, as transformers does (`full_cross_entropy`): a reference.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from torch.utils.checkpoint import checkpoint

from tunewright.data import packing, report, templates, tokenize
from tunewright.data.types import IGNORE_INDEX
from tunewright.models.load import base_model
from tunewright.sections import Section

__all__ = ["Config", "HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "METRICS", "misfit", "encode", "collate",
           "count", "end_ids", "render", "loss", "CROSS_ENTROPY", "fused_linear_cross_entropy",
           "chunked_cross_entropy", "full_cross_entropy", "split_head", "hidden_states"]

HEAD = "causal_lm"
FORMATS = None  # every registered row format (conversations and plain text)
TEMPLATED = True
PACKABLE = True
UNIT = "tokens"
METRICS: dict[str, str] = {}

CHUNK_SIZE = 1024
ChunkSize = Annotated[int, Field(gt=0, description=(
    "Rows of hidden states sent through the output projection at once (fused and chunked cross-entropy)."))]
CrossEntropy = Annotated[Literal["fused", "chunked", "full"], Field(description=(
    "How causal_lm computes the loss over target rows: `fused` computes each chunk's logits and their gradient "
    "in forward (fastest: no recompute, never full logits); `chunked` runs chunks under activation "
    "checkpointing (logits recomputed in backward); `full` projects all target rows at once, as transformers "
    "does (a reference for debugging). A PEFT-wrapped output layer (LoRA or modules_to_save on lm_head) always "
    "takes the chunked path."))]


def check_chunking(cfg) -> None:
    # compared with the default, not with the keys given: the saved config.yaml writes every default
    # out and must load again
    if cfg.cross_entropy == "full" and cfg.chunk_size != CHUNK_SIZE:
        raise ValueError("objective.chunk_size has no effect with objective.cross_entropy: full (all rows at "
                         "once); remove chunk_size or choose fused/chunked")


class Config(Section):
    name: Literal["causal_lm"] = Field("causal_lm", description="Next-token cross-entropy on the trained tokens.")
    chunk_size: ChunkSize = CHUNK_SIZE
    cross_entropy: CrossEntropy = "fused"

    @model_validator(mode="after")
    def _full_takes_no_chunks(self):
        check_chunking(self)
        return self


def misfit(run_cfg) -> str | None:
    return None


def encode(example, tokenizer, template: str, data_cfg):
    """A row -> Encoded (input_ids and labels, each [seq]; labels IGNORE_INDEX where no loss), or a
    drop reason (data/tokenize.py)."""
    return tokenize.encode(example, tokenizer, template, data_cfg)


def collate(rows: list, pad_id: int, packed: bool) -> dict:
    """Packed rows: padding-free, positions restarting per example; else one example a row, padded
    on the right. Both: input_ids and labels [B, T], plus position_ids or attention_mask."""
    if packed:
        return packing.collate_packed(rows, pad_id)
    batch = packing.collate_padded([r[0] for r in rows], pad_id, side="right")
    batch["num_tokens"] = int(batch["attention_mask"].sum())
    return batch


def count(batch: dict) -> int:
    """Positions that predict a target token: labels shifted left by one, excluding -100."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def end_ids(tokenizer, template: str) -> list[int]:
    return templates.end_of_turn_ids(tokenizer, template)


def render(encoded, tokenizer) -> str:
    return report.render_marked(encoded, tokenizer)


def split_head(model):
    """(decoder stack, output projection, softcap) of a causal LM, looking through a PEFT wrapper."""
    base = base_model(model)
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return base.get_decoder(), base.get_output_embeddings(), softcap


# ---------------------------------------------------------------- full and chunked (autograd does the backward)

def _chunk_loss(hidden: torch.Tensor, targets: torch.Tensor, head, softcap) -> torch.Tensor:
    logits = head(hidden).float()  # [rows, vocab]
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits, targets, reduction="sum")


def full_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, head, chunk_size: int,
                       softcap: float | None = None) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` [N, vocab] against `targets` [N], all rows at once.
    `chunk_size` is unused (the config refuses it with `full`); it keeps the signatures alike."""
    return _chunk_loss(hidden, targets, head, softcap)


def chunked_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, head, chunk_size: int,
                          softcap: float | None = None) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` [N, vocab] against `targets` [N], chunk by chunk."""
    # zero that stays in the graph: with no target rows, backward must still reach the inputs (a
    # rank of a distributed run whose micro-batch has no targets still joins the all-reduce)
    total = (hidden.sum() * 0).float()
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start:start + chunk_size], targets[start:start + chunk_size]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, h, y, head, softcap, use_reentrant=False)
        else:
            total = total + _chunk_loss(h, y, head, softcap)
    return total


# ---------------------------------------------------------------- fused (gradients computed in forward)

def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run the head matmul in, else the hidden states' own."""
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype


def _fused_chunks(hidden, targets, weight, bias, chunk_size, softcap, grad_h=None, grad_w=None, grad_b=None):
    """Summed CE over `hidden` [N, d] in the compute dtype (weight/bias already cast), chunk by chunk;
    fills grad_h [N, d], accumulates grad_w [vocab, d] / grad_b [vocab] (fp32) when they are given.

    Per chunk of rows, with z = h W^T + b (upcast to fp32, as `head(hidden).float()` does) and
    optionally z' = c tanh(z / c):
        loss = logsumexp(z') - z'[y]
        g    = dloss/dz = (softmax(z') - onehot(y)) * (1 - tanh^2(z / c))
        grad_h = g W,  grad_W += g^T h,  grad_b += sum_rows g
    The logits buffer is reused in place for the softmax and g: one [chunk, vocab] fp32 tensor
    (plus tanh under softcap) is all the vocabulary-sized memory there is.
    """
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start:start + chunk_size], targets[start:start + chunk_size]
        z = F.linear(h, weight, bias).float()  # [rows, vocab]
        if softcap:
            tanh = torch.tanh(z / softcap)
            z = tanh * softcap
        rows = torch.arange(y.shape[0], device=y.device)
        target = z[rows, y]  # [rows], read before z is overwritten
        # logsumexp by hand, so the exponentials are taken once, in place, and reused for the softmax
        top = z.amax(dim=-1, keepdim=True)  # [rows, 1]
        g = z.sub_(top).exp_()
        norm = g.sum(dim=-1, keepdim=True)
        total = total + (top + norm.log()).squeeze(1).sub(target).sum()
        if grad_h is None and grad_w is None and grad_b is None:
            continue
        g.div_(norm)  # softmax
        g[rows, y] -= 1
        if softcap:
            g.mul_(1 - tanh * tanh)
        g_low = g.to(weight.dtype)  # the matmuls run in the compute dtype, like autocast's backward
        if grad_h is not None:
            grad_h[start:start + chunk_size] = g_low @ weight
        if grad_w is not None:
            grad_w += (g_low.T @ h).float()  # fp32 across chunks: bf16 sums of many chunks lose bits
        if grad_b is not None:
            grad_b += g.sum(0)
    return total


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and every gradient; backward only scales them by grad_output."""

    @staticmethod
    def forward(ctx, hidden, targets, weight, bias, chunk_size, softcap):
        need_h, _, need_w, need_b = ctx.needs_input_grad[:4]
        dtype = _compute_dtype(hidden)
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)  # cast once, not per chunk
            b = bias.to(dtype) if bias is not None else None
            grad_h = torch.empty(hidden.shape, dtype=dtype, device=hidden.device) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
            total = _fused_chunks(hidden.to(dtype), targets, w, b, chunk_size, softcap, grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        scale = grad_output.float()
        # scaling in fp32 and casting once: the gradients come back in each input's dtype
        out_h = (grad_h.float() * scale).to(h_dtype) if grad_h is not None else None
        out_w = (grad_w * scale).to(w_dtype) if grad_w is not None else None
        out_b = (grad_b * scale).to(b_dtype) if grad_b is not None else None
        return out_h, None, out_w, out_b, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, head, chunk_size: int,
                               softcap: float | None = None) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` [N, vocab] against `targets` [N] (no IGNORE_INDEX: the
    caller selected target rows), with the gradients computed chunk by chunk in forward.

    Why: checkpointed chunks (`chunked_cross_entropy`) keep logit memory at chunk_size * vocab but run
    the head matmul again in backward: 3 head matmuls per token instead of 2. The gradient of
    cross-entropy with respect to the logits is known in closed form (softmax - onehot), so each
    chunk can produce grad_h and its share of grad_W while its logits are still there and drop them;
    backward is then a multiplication by the incoming scalar. With a 49k vocabulary and d=576
    (SmolLM2-135M) the head is about a fifth of all matmul FLOPs, so the saved matmul is real time.
    The same idea as Liger Kernel's fused linear cross-entropy and Apple's "Cut Your Losses in
    Large-Vocabulary Language Models" (cut cross-entropy), written here in plain torch.

    Precision follows the unfused path: matmuls in the dtype autocast would use (else the hidden
    states' dtype), logits upcast to fp32 for the log-softmax, grad_W accumulated in fp32.
    Under fp16 autocast the logit gradients are cast to fp16 before the loss scaler's factor reaches
    them (it arrives in backward), so tiny softmax terms can underflow; bf16 has fp32's range and
    does not have this problem. For fp16 training prefer `objective.cross_entropy: chunked`.
    Under no_grad, or when nothing needs a gradient, only the loss is computed.
    """
    if type(head) is not nn.Linear:
        # A PEFT-wrapped head (LoRA on lm_head, modules_to_save, trainable-token rows after a vocab
        # resize) computes more than h W^T + b and trains parameters this function does not see;
        # the checkpointed chunks go through its own forward and let autograd find them.
        return chunked_cross_entropy(hidden, targets, head, chunk_size, softcap)
    weight, bias = head.weight, head.bias
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias))
    if not needs_grad:
        return _fused_loss_only(hidden, targets, weight, bias, chunk_size, softcap)
    return _FusedLinearCrossEntropy.apply(hidden, targets, weight, bias, chunk_size, softcap)


def _fused_loss_only(hidden, targets, weight, bias, chunk_size, softcap) -> torch.Tensor:
    dtype = _compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        return _fused_chunks(hidden.to(dtype), targets, weight.to(dtype),
                             bias.to(dtype) if bias is not None else None, chunk_size, softcap)


# `objective.cross_entropy` -> how the summed loss over target rows is computed
CROSS_ENTROPY = {
    "fused": fused_linear_cross_entropy,
    "chunked": chunked_cross_entropy,
    "full": full_cross_entropy,
}


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


def loss(model, batch: dict, cfg, state=None) -> tuple[torch.Tensor, dict]:
    """batch: input_ids [B, T], labels [B, T] (unshifted), attention_mask [B, T] or position_ids
    [B, T] for packed rows. Returns the summed loss over target tokens (a 0-dim device tensor) and
    no metrics: the loop reports the mean loss and perplexity."""
    decoder, head, softcap = split_head(model)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    # [B, T, d]: a method that puts virtual tokens before the input (prompt tuning) makes the decoder
    # see n + T positions; the input's own are the last T
    hidden = hidden_states(model, inputs, decoder)[:, -batch["input_ids"].shape[1]:]
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    rows = hidden[:, :-1][keep]  # [N, d]: only positions that predict a target
    total = CROSS_ENTROPY[cfg.cross_entropy](rows, targets[keep], head, cfg.chunk_size, softcap)
    return total, {}
