"""seq2seq: the decoder's summed cross-entropy equals the hand formula over the model's logits, its
unit is the target tokens, and the data settings it cannot use are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunewright.config import parse_config
from tunewright.errors import ConfigError
from tunewright.objectives import seq2seq


def test_loss_is_the_summed_token_cross_entropy(tiny_model_dir):
    from transformers import AutoModelForSeq2SeqLM
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir("t5"))
    ids = torch.tensor([[5, 6, 7, 1], [8, 9, 1, 0]])
    labels = torch.tensor([[11, 12, 1], [13, 1, -100]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": labels}
    total, metrics = seq2seq.loss(model, batch, seq2seq.Config())
    logits = model(**batch).logits  # [B, T, vocab]; the model shifts labels right for the decoder
    logp = F.log_softmax(logits.float(), dim=-1)
    hand = -sum(logp[b, t, labels[b, t]] for b in range(2) for t in range(3) if labels[b, t] != -100)
    torch.testing.assert_close(total, hand, rtol=1e-6, atol=1e-6)
    assert metrics == {} and seq2seq.count(batch) == 5


@pytest.mark.parametrize("key,value", [("template", "alpaca"), ("system_prompt", "Be brief."),
                                       ("train_on_inputs", True), ("packing", True)])
def test_settings_an_encoder_decoder_cannot_use_are_refused(key, value):
    raw = {"data": {"datasets": [{"path": "x.jsonl"}], key: value}, "objective": {"name": "seq2seq"}}
    with pytest.raises(ConfigError, match=rf"data.{key}: .*(not used by encoder-decoder|not possible with objective)"):
        parse_config(raw, "run.yaml")
