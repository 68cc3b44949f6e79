"""Cross-entropy for encoder-decoder models (T5 style): the encoder reads the prompt, the decoder
is teacher-forced on the target. Targets are short, so logits are computed in one piece.

No chat template: T5-family models were trained on plain prompts (data/seq2seq.py builds the
prompt/target pair); an example is its own row (cross-attention would see packed neighbours).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from tunewright.data import report, seq2seq as data
from tunewright.data.types import IGNORE_INDEX
from tunewright.sections import Section

__all__ = ["Config", "HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "METRICS", "misfit", "encode", "collate",
           "count", "end_ids", "render", "loss"]

HEAD = "seq2seq"
FORMATS = None  # every registered row format (conversations and plain text)
TEMPLATED = False
PACKABLE = False
UNIT = "tokens"
METRICS: dict[str, str] = {}


class Config(Section):
    name: Literal["seq2seq"] = Field("seq2seq", description="Decoder cross-entropy of an encoder-decoder model.")

    @model_validator(mode="before")
    @classmethod
    def _causal_lm_keys(cls, raw):
        # configs saved by earlier versions wrote causal_lm's loss keys at their defaults: accept those
        if isinstance(raw, dict):
            if raw.get("cross_entropy", "fused") != "fused":
                raise ValueError(f"objective.cross_entropy: {raw['cross_entropy']!r} has no effect with objective "
                                 "seq2seq (it computes the decoder's full logits); remove the key")
            raw = {k: v for k, v in raw.items() if k not in ("cross_entropy", "chunk_size")}
        return raw


def misfit(run_cfg) -> str | None:
    """The encoder reads the plain prompt and the decoder learns the reply: no template, no system
    prompt, nothing trained on the prompt."""
    for key in ("template", "system_prompt", "train_on_inputs"):
        if getattr(run_cfg.data, key):
            return (f"data.{key}: not used by encoder-decoder models (the encoder reads the plain prompt, "
                    f"the decoder learns the reply); remove it")
    return None


def encode(example, tokenizer, template: str, data_cfg):
    """input_ids: the prompt (encoder) [S]; labels: the target (decoder) [T], both ending in EOS."""
    return data.encode_seq2seq(example, tokenizer, data_cfg)


def collate(rows: list, pad_id: int, packed: bool) -> dict:
    batch = data.collate_seq2seq([r[0] for r in rows], pad_id)
    batch["num_tokens"] = int(batch["attention_mask"].sum())
    return batch


def count(batch: dict) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


def end_ids(tokenizer, template: str) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def render(encoded, tokenizer) -> str:
    return report.render_seq2seq(encoded, tokenizer)


def loss(model, batch: dict, cfg, state=None) -> tuple[torch.Tensor, dict]:
    """batch: input_ids/attention_mask [B, S] (encoder), labels [B, T] (decoder targets, -100 pads).
    The model builds decoder inputs by shifting labels right. Returns the summed loss (a 0-dim
    device tensor) and no metrics."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                labels=batch["labels"], use_cache=False)
    logits = out.logits.float()  # [B, T, vocab]
    total = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return total, {}
