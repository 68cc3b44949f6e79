"""Merge parity: does the merged model answer as the adapter on its base did? Checked on 4 fixed
prompts, each run alone (no padding), by `tunewright merge` before anything is written.

    d_merge = max |logits(merged) - logits(unmerged)|          both in the merge dtype
    fp32:        passes when d_merge <= 1e-3
    bf16, fp16:  rounding alone moves logits, so the bar is the model's own rounding: with
                 d_own = max |logits(unmerged, dtype) - logits(unmerged, fp32)|, passes when
                 d_merge <= 2 d_own and the greedy next token after every prompt is the same
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PROMPTS", "FP32_LIMIT", "Parity", "prompt_logits", "parity"]

PROMPTS = ("The capital of France is", "def add(a, b):\n    return", "Once upon a time, in a small village,",
           "Question: what is two plus three?\nAnswer:")
FP32_LIMIT = 1e-3


@dataclass
class Parity:
    passed: bool
    line: str


def prompt_logits(model, tokenizer) -> list[torch.Tensor]:
    """Each prompt's logits [T, vocab] in fp32 on the CPU (the input's own positions only). An
    encoder-decoder model reads the prompt in its encoder and, teacher-forced, in its decoder."""
    device = next(model.parameters()).device
    config = model.config
    out = []
    model.eval()
    with torch.no_grad():
        for text in PROMPTS:
            ids = torch.tensor([tokenizer(text)["input_ids"]], device=device)
            kwargs = {}
            if getattr(config, "is_encoder_decoder", False):
                start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.pad_token_id
                kwargs["decoder_input_ids"] = torch.cat([torch.tensor([[start]], device=device), ids[:, :-1]], dim=1)
            logits = model(input_ids=ids, **kwargs).logits[0, -ids.shape[1]:]
            out.append(logits.float().cpu())
    return out


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def parity(unmerged: list[torch.Tensor], merged: list[torch.Tensor], dtype: str,
           reference32: list[torch.Tensor] | None = None) -> Parity:
    """The verdict and its one line (`parity: ...`); `reference32`: the unmerged model in fp32,
    needed for a bf16/fp16 merge."""
    d_merge = _max_diff(merged, unmerged)
    where = f"on {len(PROMPTS)} prompts ({dtype})"
    if dtype == "float32":
        ok = d_merge <= FP32_LIMIT
        return Parity(ok, f"parity: max |logit diff| merged vs unmerged {d_merge:.2e} {where}, limit {FP32_LIMIT:.0e}: "
                          f"{'PASS' if ok else 'FAIL'}")
    if reference32 is None:
        raise ValueError("a bf16/fp16 parity check needs the unmerged model's fp32 logits")
    d_own = _max_diff(unmerged, reference32)
    same_next = all(int(m[-1].argmax()) == int(u[-1].argmax()) for m, u in zip(merged, unmerged))
    ok = d_merge <= 2 * d_own and same_next
    return Parity(ok, f"parity: max |logit diff| merged vs unmerged {d_merge:.2e} {where}, limit 2 x {d_own:.2e} "
                      f"(the unmerged model's own {dtype} vs float32 difference); greedy next tokens "
                      f"{'agree' if same_next else 'DISAGREE'}: {'PASS' if ok else 'FAIL'}")
