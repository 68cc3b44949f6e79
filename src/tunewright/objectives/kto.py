"""KTO (Ethayarajh et al. 2024): learn from single answers labelled desirable or undesirable.

Per row, with r = log π(y|x) - log π_ref(y|x) (summed over the answer's tokens, pairs.py), β = `beta`
and z0 the reference point:

    desirable     w_d (1 - σ(β (r - z0)))      w_d = desirable_weight
    undesirable   w_u (1 - σ(β (z0 - r)))      w_u = undesirable_weight

z0 estimates KL(π || π_ref) per micro-batch, as the paper and TRL do: each prompt x_i is paired with
the answer of the previous row, y_(i-1 mod B) (an answer the prompt did not ask for; TRL's rotation,
so the same B answers are scored against other prompts), and

    z0 = max(0, mean_i [log π(y_(i-1)|x_i) - log π_ref(y_(i-1)|x_i)])

with no gradient through it (the policy's side is scored under no_grad). A micro-batch of one row
pairs the prompt with its own answer. Because z0 depends on which rows share a micro-batch, the loss
of 4 micro-batches of 2 rows is not that of one batch of 8 (the other objectives' losses are), and
reference log-probs cannot be precomputed per row: `reference: precomputed` is refused.

Logged (summed over the step's rows, so a mean is sum / rows): rewards/chosen and rewards/rejected
(β r of desirable and of undesirable rows), desirable and undesirable (row counts), and kl (z0,
averaged over rows).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from tunewright.data.types import Encoded
from tunewright.objectives import pairs
from tunewright.sections import Section

__all__ = ["Config", "HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "METRICS", "misfit", "encode", "collate",
           "count", "end_ids", "render", "setup", "loss", "kto_losses", "kl_rows"]

HEAD = "causal_lm"
FORMATS = ("unpaired",)
TEMPLATED = True
PACKABLE = False  # the KL estimate pairs rows of one micro-batch; each row is its own sequence
UNIT = "rows"
METRICS = {"rewards/chosen": "sum", "rewards/rejected": "sum", "desirable": "sum", "undesirable": "sum",
           "kl": "mean"}


class Config(Section):
    name: Literal["kto"] = Field("kto", description="KTO on single answers labelled desirable or undesirable.")
    beta: float = Field(0.1, gt=0, description="Inverse temperature of the implicit reward.")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of desirable rows' loss.")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of undesirable rows' loss.")
    disable_dropout: bool = Field(True, description="Turn dropout off (else policy and reference differ at step 1).")
    reference: pairs.Reference = None
    chunk_size: pairs.ChunkSize = pairs.CHUNK_SIZE

    @model_validator(mode="after")
    def _no_precomputed(self):
        if self.reference == "precomputed":
            raise ValueError("objective.reference: precomputed is not possible with kto (its KL estimate scores each "
                             "prompt with another row's answer, which depends on the batch); use adapter_disabled "
                             "or frozen_copy")
        return self


def misfit(run_cfg) -> str | None:
    return pairs.misfit(run_cfg, "kto")


def encode(example, tokenizer, template: str, data_cfg):
    """A labelled answer -> Encoded (prompt + answer; meta: prompt_len, label), or a drop reason."""
    return pairs.encode_answers(example, tokenizer, template, data_cfg)


def kl_rows(encoded: list[Encoded]) -> list[Encoded]:
    """Prompt i with the answer of row i-1 (mod B): the mismatched sequences z0 is estimated on."""
    out = []
    for i, e in enumerate(encoded):
        other = encoded[i - 1]  # row -1 is the last: (x_1, y_B), (x_2, y_1), ...
        p, q = e.meta["prompt_len"], other.meta["prompt_len"]
        out.append(Encoded(e.input_ids[:p] + other.input_ids[q:], e.labels[:p] + other.labels[q:], e.source, e.line))
    return out


def collate(rows: list, pad_id: int, packed: bool) -> dict:
    """B rows -> input_ids/labels/attention_mask [2B, T] (rows 0..B-1 the rows, B..2B-1 the KL rows)
    and `desirable` [B] (bool)."""
    encoded = [r[0] for r in rows]
    batch = pairs.collate_rows(encoded + kl_rows(encoded), pad_id)
    batch["num_tokens"] = int(batch["attention_mask"][:len(encoded)].sum())  # the KL rows are not trained
    batch["desirable"] = torch.tensor([e.meta["label"] for e in encoded], dtype=torch.bool)
    return batch


def count(batch: dict) -> int:
    return int(batch["desirable"].shape[0])


end_ids = pairs.end_ids
render = pairs.render


def setup(model, cfg, data=None):
    if cfg.disable_dropout:
        pairs.disable_dropout(model)
    return pairs.make_reference(model, cfg.reference)


def kto_losses(cfg, logps: torch.Tensor, ref_logps: torch.Tensor, kl: torch.Tensor, desirable: torch.Tensor):
    """(loss per row [B], reward per row [B]) from summed log-probs [B], z0 (0-dim) and labels [B]."""
    r = logps - ref_logps
    losses = torch.where(desirable, cfg.desirable_weight * (1 - torch.sigmoid(cfg.beta * (r - kl))),
                         cfg.undesirable_weight * (1 - torch.sigmoid(cfg.beta * (kl - r))))
    return losses, (cfg.beta * r).detach()


def loss(model, batch: dict, cfg, state=None) -> tuple[torch.Tensor, dict]:
    b = batch["desirable"].shape[0]
    rows = {k: batch[k][:b] for k in ("input_ids", "labels", "attention_mask")}
    mismatched = {k: batch[k][b:] for k in ("input_ids", "labels", "attention_mask")}
    logps = pairs.sequence_logps(model, rows, cfg.chunk_size)[0]
    ref_logps = state(lambda m: pairs.sequence_logps(m, batch, cfg.chunk_size)[0])  # [2B]: rows, then KL rows
    with torch.no_grad():
        kl_policy = pairs.sequence_logps(model, mismatched, cfg.chunk_size)[0]
    kl = (kl_policy - ref_logps[b:]).mean().clamp(min=0)
    losses, rewards = kto_losses(cfg, logps, ref_logps[:b], kl, batch["desirable"])
    good = batch["desirable"]
    return losses.sum(), {"rewards/chosen": rewards[good].sum(), "rewards/rejected": rewards[~good].sum(),
                          "desirable": good.sum().float(), "undesirable": (~good).sum().float(), "kl": kl * b}
