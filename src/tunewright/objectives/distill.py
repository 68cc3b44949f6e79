"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
Network"): a frozen teacher's softened distribution trains the student, mixed with the labels'
cross-entropy.

    p = softmax(z_teacher / T),  q = softmax(z_student / T)
    forward KL   KL(p || q) = sum_v p_v (log p_v - log q_v)    mean-seeking: the student covers all of p
    reverse KL   KL(q || p) = sum_v q_v (log q_v - log p_v)    mode-seeking (Gu et al. 2024, MiniLLM)
    loss_t = alpha * T^2 * KL_t + (1 - alpha) * CE(z_student, y_t)     per target token, summed

T^2 keeps the soft term's gradient on the scale of the hard one's as T changes (Hinton et al. §2).

Neither model's [batch, seq, vocab] logits are built: both run their decoder for hidden states,
only the target positions are kept, and the two output projections see `chunk_size` rows at a
time; each chunk runs under activation checkpointing, so its logits are recomputed in backward
instead of kept (the pattern of causal_lm.chunked_cross_entropy). `distillation_loss` itself takes
any pair of logits, so a classification head's old-class logits (LwF, continual learning) use the
same function.

The teacher is a model folder, hub id or alias, an adapter, or a run folder (its final/), loaded
once in eval mode with every parameter frozen (objectives/reference.py); it must share the
student's tokenizer (the same vocabulary, checked when it loads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.checkpoint import checkpoint

from tunewright.data.types import IGNORE_INDEX
from tunewright.errors import ConfigError
from tunewright.objectives import causal_lm
from tunewright.objectives.reference import Reference
from tunewright.sections import Section

__all__ = ["Config", "HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "METRICS", "misfit", "encode", "collate",
           "count", "end_ids", "render", "setup", "loss", "distillation_loss", "chunked_distillation", "KL"]

HEAD = "causal_lm"
FORMATS = None  # every registered row format, as causal_lm
TEMPLATED = True
PACKABLE = True  # the teacher reads the same packed rows (position ids restart per example)
UNIT = "tokens"
METRICS = {"kl": "mean", "ce": "mean"}  # T^2 * KL and the hard cross-entropy, per target token
encode, collate, count, end_ids, render = (causal_lm.encode, causal_lm.collate, causal_lm.count, causal_lm.end_ids,
                                           causal_lm.render)


class Config(Section):
    name: Literal["distill"] = Field("distill", description="Distil a frozen teacher into the trained model.")
    teacher: str | None = Field(None, description=(
        "The teacher: a model folder, hub id or alias, an adapter folder, or a run folder (its final/). Same "
        "tokenizer as the student."))
    temperature: float = Field(2.0, gt=0, description="T: both distributions are softmax(logits / T).")
    alpha: float = Field(0.5, ge=0, le=1, description=(
        "Weight of the distillation term (T^2 * KL); 1 - alpha weighs the labels' cross-entropy."))
    kl_direction: Literal["forward", "reverse"] = Field("forward", description=(
        "forward: KL(teacher || student), covers the teacher's mass; reverse: KL(student || teacher), "
        "mode-seeking."))
    chunk_size: causal_lm.ChunkSize = causal_lm.CHUNK_SIZE
    teacher_dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype the teacher loads in.")


def misfit(run_cfg) -> str | None:
    if not run_cfg.objective.teacher:
        return "objective.teacher: distill needs a teacher (a model, an adapter or a run folder)"
    return None


# ---------------------------------------------------------------- the loss on any logits

def _forward_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)


def _reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)


KL = {"forward": _forward_kl, "reverse": _reverse_kl}  # objective.kl -> (log q, log p) -> [N]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                      kl: str = "forward") -> torch.Tensor:
    """T^2 * KL between softened distributions, per row: [N] from logits [N, K] (any K: a vocabulary
    or a classification head's classes). fp32; the teacher's logits carry no gradient."""
    t = float(temperature)
    student = torch.log_softmax(student_logits.float() / t, dim=-1)
    teacher = torch.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    return KL[kl](student, teacher) * (t * t)


# ---------------------------------------------------------------- chunk by chunk over target positions

def _project(hidden: torch.Tensor, head, softcap) -> torch.Tensor:
    logits = head(hidden).float()  # [rows, vocab]
    return softcap * torch.tanh(logits / softcap) if softcap else logits


def _chunk(student_h, teacher_h, targets, student_head, teacher_head, softcaps, temperature, kl):
    """(summed T^2 KL, summed CE) of one chunk of target rows; both logits live only in here."""
    student = _project(student_h, student_head, softcaps[0])
    with torch.no_grad():
        teacher = _project(teacher_h, teacher_head, softcaps[1])
    soft = distillation_loss(student, teacher, temperature, kl).sum()
    hard = F.cross_entropy(student, targets, reduction="sum")
    return torch.stack([soft, hard])


def chunked_distillation(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, targets: torch.Tensor,
                         student_head, teacher_head, temperature: float, kl: str = "forward", chunk_size: int = 1024,
                         softcaps: tuple = (None, None)) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed T^2 KL, summed CE) over N target rows: student_hidden [N, d_s], teacher_hidden [N, d_t]
    (no gradient), targets [N]. At most `chunk_size` rows of either model's logits exist at once;
    under autograd each chunk is recomputed in backward instead of keeping its logits."""
    total = (student_hidden.sum() * 0).float().expand(2)  # in the graph even with no rows (a rank's empty batch)
    for start in range(0, student_hidden.shape[0], chunk_size):
        part = slice(start, start + chunk_size)
        args = (student_hidden[part], teacher_hidden[part], targets[part], student_head, teacher_head, softcaps,
                temperature, kl)
        total = total + (checkpoint(_chunk, *args, use_reentrant=False) if torch.is_grad_enabled() else _chunk(*args))
    return total[0], total[1]


# ---------------------------------------------------------------- the teacher

def _load_teacher(cfg: Config):
    """(teacher model, its tokenizer): a trained folder through its method, else a model by name."""
    from tunewright.models.load import ModelConfig, load_model, load_tokenizer
    from tunewright.models.trained import load_trained

    if Path(cfg.teacher).exists():
        return load_trained(cfg.teacher, dtype=cfg.teacher_dtype)
    model_cfg = ModelConfig(name=cfg.teacher, dtype=cfg.teacher_dtype)
    return load_model(model_cfg, HEAD).eval(), load_tokenizer(model_cfg)


def setup(model, cfg: Config, data=None) -> Reference:
    """The frozen teacher, on the student's device, checked to share the student's vocabulary."""
    from tunewright.models.load import ModelConfig, base_model, load_tokenizer
    from tunewright.objectives.reference import frozen

    teacher, teacher_tok = _load_teacher(cfg)
    student = base_model(model)
    widths = (student.get_output_embeddings().weight.shape[0], base_model(teacher).get_output_embeddings().weight.shape[0])
    if widths[0] != widths[1]:
        raise ConfigError(f"objective.teacher: {cfg.teacher!r} scores {widths[1]:,} tokens, the student {widths[0]:,}; "
                          f"distillation needs the same tokenizer")
    source = getattr(student, "name_or_path", "")
    if source and Path(source).is_dir():
        vocab = load_tokenizer(ModelConfig(name=source)).get_vocab()
        if any(vocab.get(token) != i for token, i in teacher_tok.get_vocab().items() if i < widths[0]):
            raise ConfigError(f"objective.teacher: {cfg.teacher!r} has another tokenizer than the student (the same "
                              f"ids must mean the same tokens)")
    return frozen(teacher.to(next(model.parameters()).device))


def loss(model, batch: dict, cfg: Config, state: Reference | None = None) -> tuple[torch.Tensor, dict]:
    """batch as causal_lm's; `state` the teacher (setup). Summed alpha * T^2 KL + (1 - alpha) * CE over
    target tokens, and both parts (summed) as metrics."""
    if state is None:
        raise ConfigError("objective distill: no teacher was set up (objectives.setup)")
    decoder, head, softcap = causal_lm.split_head(model)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    rows = causal_lm.hidden_states(model, inputs, decoder)[:, :-1][keep]  # [N, d]

    def teacher_rows(teacher):
        t_decoder, t_head, t_softcap = causal_lm.split_head(teacher)
        return causal_lm.hidden_states(teacher, inputs, t_decoder)[:, :-1][keep], t_head, t_softcap

    t_rows, t_head, t_softcap = state(teacher_rows)
    soft, hard = chunked_distillation(rows, t_rows, targets[keep], head, t_head, cfg.temperature,
                                      cfg.kl_direction, cfg.chunk_size, (softcap, t_softcap))
    return cfg.alpha * soft + (1 - cfg.alpha) * hard, {"kl": soft.detach(), "ce": hard.detach()}
