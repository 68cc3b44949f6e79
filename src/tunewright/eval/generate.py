"""Batched generation with the training-time template.

Prompts are encoded by the same code that built the training data (`encode_prompt`), so the
tokens the model sees at inference are exactly a prefix of what it was trained on. Decoder-only
models are padded on the left, so every prompt ends where generation starts.
"""

from __future__ import annotations

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tunewright.data.types import Message
from tunewright.training import stop as stop_signal

__all__ = ["generate", "prompt_ids"]


def prompt_ids(prompt: str | list[dict], tokenizer, template: str | None, raw: bool = False,
               system_prompt: str | None = None) -> list[int]:
    """Token ids of one prompt: a user message (or a conversation) rendered with the template, or
    the raw text when `raw` (models trained on plain text)."""
    from tunewright.data.tokenize import encode_prompt

    if raw or not template:
        return tokenizer(prompt, add_special_tokens=True)["input_ids"]
    messages = [Message("user", prompt)] if isinstance(prompt, str) else [Message(**m) for m in prompt]
    return encode_prompt(messages, tokenizer, template, system_prompt=system_prompt)


def generate(model, tokenizer, prompts: list, *, template: str | None = None, raw: bool = False,
             max_new_tokens: int = 128, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             stop: list[str] | None = None, eos_token_ids: list[int] | None = None, batch_size: int = 8,
             seed: int = 0, system_prompt: str | None = None) -> list[str]:
    """Generate a completion for each prompt; returns the decoded new text (stop strings cut off)."""
    model.eval()
    device = next(model.parameters()).device
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = eos_token_ids or getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
    torch.manual_seed(seed)
    encoded = [prompt_ids(p, tokenizer, template, raw or encoder_decoder, system_prompt) for p in prompts]
    # batches of similar lengths: a short prompt batched with a long one pays for the long one's
    # padding at every step; the answers come back in the prompts' order
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    outputs: list[str | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        chunk = [encoded[i] for i in rows]
        width = max(len(ids) for ids in chunk)
        # left padding for decoder-only models: the last prompt token sits next to the first new one
        padded = [_pad(ids, width, pad, left=not encoder_decoder) for ids in chunk]
        input_ids = torch.tensor([ids for ids, _ in padded], device=device)
        attention_mask = torch.tensor([mask for _, mask in padded], device=device)
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, eos_token_id=eos, pad_token_id=pad)
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs.update(stop_strings=stop, tokenizer=tokenizer)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                 stopping_criteria=StoppingCriteriaList([_StopOnSignal()]), **kwargs)
        stop_signal.check()  # a stop signal cut this batch short: its text is not an answer
        new = out if encoder_decoder else out[:, width:]
        for i, row in zip(rows, new):
            outputs[i] = _cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stop)
    return outputs


class _StopOnSignal(StoppingCriteria):
    """Ends generation at the next token once a stop signal arrived during training (a run's
    evaluation must not hold SIGTERM for minutes; see training/stop.py)."""

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), stop_signal.requested() is not None, dtype=torch.bool,
                          device=input_ids.device)


def _pad(ids: list[int], width: int, pad: int, left: bool) -> tuple[list[int], list[int]]:
    """(padded ids, attention mask) of length `width`."""
    fill = width - len(ids)
    if left:
        return [pad] * fill + ids, [0] * fill + [1] * len(ids)
    return ids + [pad] * fill, [1] * len(ids) + [0] * fill


def _cut_at_stop(text: str, stop: list[str] | None) -> str:
    for s in stop or []:
        at = text.find(s)
        if at >= 0:
            text = text[:at]
    return text
