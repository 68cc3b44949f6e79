"""Encoder-decoder data (T5 style): the prompt goes to the encoder, the reply is the decoder target.

No chat template is applied: T5-family models were trained on plain prompts ("Summarize the
following conversation. ..."). A conversation's non-assistant turns (with alpaca's `input`)
form the prompt and its last assistant turn the target; raw segments split by their train flag.
"""

from __future__ import annotations

import torch

from tunewright.data.types import IGNORE_INDEX, Encoded, Example

__all__ = ["split_prompt_target", "encode_seq2seq", "collate_seq2seq"]


def split_prompt_target(example: Example) -> tuple[str, str]:
    if example.segments is not None:
        return ("".join(s.text for s in example.segments if not s.train),
                "".join(s.text for s in example.segments if s.train))
    prompt = [m.content + (f"\n\n{m.context}" if m.context else "") for m in example.messages if m.role != "assistant"]
    replies = [m.content for m in example.messages if m.role == "assistant"]
    return "\n\n".join(prompt), replies[-1] if replies else ""


def encode_seq2seq(example: Example, tokenizer, cfg) -> Encoded | str:
    """input_ids: the prompt (encoder) [S]; labels: the target (decoder) [T], both ending in EOS."""
    prompt, target = split_prompt_target(example)
    src = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    tgt = tokenizer(target, add_special_tokens=True)["input_ids"] if target else []
    if not tgt:
        return "no_target"
    meta = {}
    if len(src) > cfg.cutoff_len or len(tgt) > cfg.cutoff_len:
        if cfg.truncation == "drop":
            return "too_long"
        src, tgt, meta = src[:cfg.cutoff_len], tgt[:cfg.cutoff_len], {"truncated": True}
    meta["decoder_tokens"] = len(tgt)
    return Encoded(src, tgt, example.source, example.line, meta)


def collate_seq2seq(batch: list[Encoded], pad_id: int) -> dict:
    """input_ids/attention_mask [B, S] right-padded; labels [B, T] padded with -100."""
    s = max(len(e.input_ids) for e in batch)
    t = max(len(e.labels) for e in batch)
    ids = torch.full((len(batch), s), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), s), dtype=torch.long)
    labels = torch.full((len(batch), t), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[i, :len(e.input_ids)] = 1
        labels[i, :len(e.labels)] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
