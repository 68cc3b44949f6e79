"""Cross-entropy for encoder-decoder models (T5 style): the encoder reads the prompt, the decoder
is teacher-forced on the target. Targets are short, so logits are computed in one piece."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunewright.data.types import IGNORE_INDEX
from tunewright.errors import ConfigError

__all__ = ["loss", "count_targets"]


def count_targets(batch: dict) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


def loss(model, batch: dict, cfg) -> tuple[torch.Tensor, dict]:
    """batch: input_ids/attention_mask [B, S] (encoder), labels [B, T] (decoder targets, -100 pads).
    The model builds decoder inputs by shifting labels right. Returns the summed loss and
    {"tokens": their count} as a 0-dim device tensor (int() would wait for the GPU every micro-batch)."""
    if cfg.cross_entropy != "fused":
        # `objective.name: auto` resolves to seq2seq only once the model is loaded, so the config
        # could not refuse this key; targets are short and the logits come from the model's forward
        raise ConfigError(f"objective.cross_entropy: {cfg.cross_entropy!r} has no effect with an encoder-decoder "
                          "model (seq2seq computes full logits); remove the key")
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                labels=batch["labels"], use_cache=False)
    logits = out.logits.float()  # [B, T, vocab]
    total = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return total, {"tokens": (batch["labels"] != IGNORE_INDEX).sum()}
