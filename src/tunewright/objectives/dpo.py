"""Direct preference optimization and its family: learn from (prompt, chosen, rejected) pairs.

Per pair, with log-probabilities summed over the answer's tokens (pairs.py), the policy π and the
frozen reference π_ref, and β = `beta`:

    Δ = (log π(y_c|x) - log π_ref(y_c|x)) - (log π(y_r|x) - log π_ref(y_r|x))
    sigmoid  -(1-ε) log σ(βΔ) - ε log σ(-βΔ)           DPO (Rafailov et al. 2023); ε = label_smoothing > 0
                                                         is conservative DPO (cDPO)
    robust   (-(1-ε) log σ(βΔ) + ε log σ(-βΔ)) / (1-2ε)  robust DPO (Chowdhury et al. 2024), noisy labels
    hinge    max(0, 1 - βΔ)                              SLiC-style hinge (Zhao et al. 2023)
    ipo      (Δ - 1/(2β))²                               IPO (Azar et al. 2023), on *summed* log-probs as in
                                                         the paper (TRL averages per token; not here)
and without a reference, on mean token log-probs  l̄ = log π(y|x) / |y|:
    simpo    -log σ(β (l̄_c - l̄_r) - γ)                  SimPO (Meng et al. 2024), γ = simpo_gamma
    orpo     -l̄_c - λ log σ(log odds(y_c) - log odds(y_r)),  odds(y) = e^l̄ / (1 - e^l̄)
                                                         ORPO (Hong et al. 2024), λ = orpo_lambda

`sft_weight` w adds w · (-l̄_c), an SFT term on the chosen answer (LLaMA-Factory's pref_ftx, RPO).
Every term is per pair and summed: the loop divides by the number of pairs in the whole accumulated
batch, so micro-batching does not change the loss. Rewards logged: β(log π - log π_ref) for each
answer (β l̄ without a reference); margins = chosen - rejected; accuracy = chosen > rejected.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from tunewright.objectives import pairs
from tunewright.objectives import reference as references
from tunewright.sections import Section

__all__ = ["Config", "HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "METRICS", "LOSSES", "misfit", "encode",
           "collate", "count", "end_ids", "render", "setup", "loss", "pair_losses"]

HEAD = "causal_lm"
FORMATS = ("preference", "ranked")
TEMPLATED = True
PACKABLE = False  # chosen and rejected must be scored as whole sequences side by side, one a row
UNIT = "pairs"
METRICS = {"rewards/chosen": "mean", "rewards/rejected": "mean", "margins": "mean", "accuracy": "mean"}

LOSSES = ("sigmoid", "robust", "ipo", "hinge", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")
SMOOTHED = ("sigmoid", "robust", "simpo")  # the losses label_smoothing applies to


class Config(Section):
    name: Literal["dpo"] = Field("dpo", description="Preference optimization on (prompt, chosen, rejected) pairs.")
    loss: Literal["sigmoid", "robust", "ipo", "hinge", "simpo", "orpo"] = Field(
        "sigmoid", description="sigmoid (DPO), robust, ipo, hinge, simpo or orpo (the last two use no reference).")
    beta: float = Field(0.1, gt=0, description=(
        "Inverse temperature of the implicit reward (IPO: the target margin is 1/(2 beta))."))
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description=(
        "Probability that a pair's label is flipped (conservative DPO with sigmoid; robust; simpo)."))
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO's target reward margin gamma.")
    orpo_lambda: float = Field(0.1, gt=0, description="ORPO's weight of the odds-ratio term.")
    sft_weight: float = Field(0.0, ge=0, description="Weight of an SFT term on the chosen answer (mean token NLL).")
    disable_dropout: bool = Field(True, description="Turn dropout off (else policy and reference differ at step 1).")
    reference: pairs.Reference = None
    chunk_size: pairs.ChunkSize = pairs.CHUNK_SIZE

    @model_validator(mode="after")
    def _consistent(self):
        if self.loss in REFERENCE_FREE and self.reference is not None:
            raise ValueError(f"objective.reference: loss {self.loss} uses no reference model; remove reference")
        if self.label_smoothing and self.loss not in SMOOTHED:
            raise ValueError(f"objective.label_smoothing: not defined for loss {self.loss} "
                             f"(only {', '.join(SMOOTHED)}); remove it")
        if self.loss == "robust" and not self.label_smoothing:
            raise ValueError("objective.label_smoothing: loss robust needs the flip rate (> 0; with 0 it is sigmoid)")
        if self.loss == "orpo" and self.sft_weight:
            raise ValueError("objective.sft_weight: ORPO's loss already holds the SFT term; remove sft_weight")
        return self


def misfit(run_cfg) -> str | None:
    return pairs.misfit(run_cfg, "dpo")


def encode(example, tokenizer, template: str, data_cfg):
    """A pair -> Encoded (prompt + chosen; the rejected answer in meta), or a drop reason (pairs.py)."""
    return pairs.encode_answers(example, tokenizer, template, data_cfg)


def collate(rows: list, pad_id: int, packed: bool) -> dict:
    """B pairs -> input_ids/labels/attention_mask [2B, T] (rows 0..B-1 chosen, B..2B-1 rejected, each
    prompt + answer, padded on the right) and `key` [B] (for precomputed reference values)."""
    encoded = [r[0] for r in rows]
    batch = pairs.collate_rows(encoded + [pairs.second(e) for e in encoded], pad_id)
    batch["key"] = pairs.row_keys(encoded)
    return batch


def count(batch: dict) -> int:
    return int(batch["key"].shape[0])


end_ids = pairs.end_ids
render = pairs.render


def setup(model, cfg, data=None):
    """The frozen reference (None for simpo/orpo); dropout off first, so the reference is the model
    as it trains. `precomputed`: reference log-probs of every training and evaluation pair now, or
    read back from the data cache when this model and these rows were scored before."""
    if cfg.disable_dropout:
        pairs.disable_dropout(model)
    if cfg.loss in REFERENCE_FREE:
        return None
    if cfg.reference != "precomputed":
        return pairs.make_reference(model, cfg.reference)
    ref = pairs.make_reference(model, None)
    rows = [*(data.train if data else []), *(data.eval if data else [])]
    parts = {"values": "dpo chosen/rejected log-probs", "rows": pairs.row_keys(rows).tolist() if rows else [],
             "chunk_size": cfg.chunk_size}
    values = references.cached(getattr(data, "cache_dir", None), ref.model, parts,
                               lambda: pairs.precompute_logps(ref, lambda e: [e, pairs.second(e)], rows, 0,
                                                              cfg.chunk_size))
    return references.precomputed(values)


def pair_losses(cfg, chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor | None,
                ref_rejected: torch.Tensor | None, n_chosen: torch.Tensor, n_rejected: torch.Tensor):
    """(loss per pair [B], reward of chosen [B], reward of rejected [B]) from summed log-probs [B]
    and answer lengths in tokens [B] (the formulas of the module docstring)."""
    beta, eps = cfg.beta, cfg.label_smoothing
    mean_c, mean_r = chosen / n_chosen, rejected / n_rejected
    if cfg.loss in REFERENCE_FREE:
        r_c, r_r = beta * mean_c, beta * mean_r
        if cfg.loss == "simpo":
            z = beta * (mean_c - mean_r) - cfg.simpo_gamma
            losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
        else:
            # log odds = l̄ - log(1 - e^l̄); log1p(-exp) is exact near 0 (answers the model is sure of)
            log_odds = (mean_c - torch.log1p(-torch.exp(mean_c))) - (mean_r - torch.log1p(-torch.exp(mean_r)))
            losses = -mean_c - cfg.orpo_lambda * F.logsigmoid(log_odds)
    else:
        delta = (chosen - ref_chosen) - (rejected - ref_rejected)
        r_c, r_r = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
        z = beta * delta
        if cfg.loss == "sigmoid":
            losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
        elif cfg.loss == "robust":
            losses = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
        elif cfg.loss == "hinge":
            losses = torch.relu(1 - z)
        else:  # ipo
            losses = (delta - 1 / (2 * beta)) ** 2
    if cfg.sft_weight:
        losses = losses - cfg.sft_weight * mean_c
    return losses, r_c.detach(), r_r.detach()


def loss(model, batch: dict, cfg, state=None) -> tuple[torch.Tensor, dict]:
    """batch from `collate`. Returns the loss summed over pairs and the summed reward metrics."""
    logps, lengths = pairs.sequence_logps(model, batch, cfg.chunk_size)  # [2B]
    b = logps.shape[0] // 2
    ref = (None, None)
    if state is not None:
        if state.model is None:  # precomputed: looked up by the pairs' keys
            values = torch.stack([state.lookup(k) for k in batch["key"].tolist()]).to(logps.device)  # [B, 2]
            ref = (values[:, 0], values[:, 1])
        else:
            ref_logps = state(lambda m: pairs.sequence_logps(m, batch, cfg.chunk_size)[0])
            ref = (ref_logps[:b], ref_logps[b:])
    losses, r_c, r_r = pair_losses(cfg, logps[:b], logps[b:], *ref, lengths[:b], lengths[b:])
    return losses.sum(), {"rewards/chosen": r_c.sum(), "rewards/rejected": r_r.sum(),
                          "margins": (r_c - r_r).sum(), "accuracy": (r_c > r_r).float().sum()}
