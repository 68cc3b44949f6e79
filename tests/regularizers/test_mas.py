"""MAS: Ω equals hand gradients of the output's squared norm (absolute per row, then the mean); on a
causal LM the output is the decoder's last hidden state over real positions, and the head
(full-vocabulary logits) is never run."""

from __future__ import annotations

import pytest
import torch

from tunewright.regularizers import mas


def test_importance_equals_hand_gradients():
    """f(x) = W x, ‖f(x)‖² = xᵀWᵀWx, ∂/∂W = 2 (W x) xᵀ: Ω = mean_k |2 (W x_k) x_kᵀ|."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2, bias=False)
    rows = [torch.randn(3) for _ in range(5)]
    W = model.weight.detach()
    by_hand = sum((2 * torch.outer(W @ x, x)).abs() for x in rows) / len(rows)

    got = mas.importance(model, iter(rows), samples=5, output_norm=lambda m, x: m(x).pow(2).sum())

    torch.testing.assert_close(got["weight"], by_hand)
    # the absolute value is per row: |mean of the gradients| is smaller where rows disagree in sign
    signed_mean = sum(2 * torch.outer(W @ x, x) for x in rows) / len(rows)
    assert float((by_hand - signed_mean.abs()).max()) > 1e-3


def test_the_output_is_the_last_hidden_state_and_the_head_is_never_run(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32).eval()
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}
    heads = []
    model.lm_head.register_forward_hook(lambda *a: heads.append(1))

    value = mas.hidden_norm(model, batch)

    assert heads == []
    hidden = model.model(**batch).last_hidden_state  # [2, 4, d], the decoder stack's output
    squared = hidden.pow(2).sum(-1)  # [2, 4]
    expected = (squared * batch["attention_mask"]).sum() / 6  # 6 real positions; padding left out
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert value.requires_grad
