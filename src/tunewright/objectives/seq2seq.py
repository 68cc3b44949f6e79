"""Cross-entropy for encoder-decoder models (T5 style): the encoder reads the prompt, the decoder
is teacher-forced on the target. Targets are short, so logits are computed in one piece."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunewright.data.types import IGNORE_INDEX

__all__ = ["loss", "count_targets"]


def count_targets(batch: dict) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


def loss(model, batch: dict, cfg) -> tuple[torch.Tensor, dict]:
    """batch: input_ids/attention_mask [B, S] (encoder), labels [B, T] (decoder targets, -100 pads).
    The model builds decoder inputs by shifting labels right."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                labels=batch["labels"], use_cache=False)
    logits = out.logits.float()  # [B, T, vocab]
    total = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return total, {"tokens": count_targets(batch)}
