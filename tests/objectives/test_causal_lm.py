"""Chunked cross-entropy equals the plain loss and gradients, and never projects more than a chunk."""

import torch
import torch.nn.functional as F

from tunewright.config import ObjectiveConfig
from tunewright.objectives import causal_lm


def _model(tiny_model_dir, arch="llama"):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch), dtype=torch.float32)


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 400, (3, 17), generator=g)
    labels = ids.clone()
    labels[0, :6] = -100  # a masked prompt
    labels[2, 10:] = -100  # padding at the end
    mask = torch.ones_like(ids)
    mask[2, 10:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def test_chunked_loss_and_grads_equal_plain(tiny_model_dir):
    model, batch = _model(tiny_model_dir), _batch()
    ours, metrics = causal_lm.loss(model, batch, ObjectiveConfig(chunk_size=7))
    ours.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    plain = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="sum")
    plain.backward()
    assert metrics["tokens"] == causal_lm.count_targets(batch) == int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(ours, plain, rtol=1e-6, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-5, atol=1e-5, msg=n)


def test_output_projection_sees_at_most_one_chunk(tiny_model_dir):
    model, batch = _model(tiny_model_dir), _batch()
    rows_seen = []
    model.get_output_embeddings().register_forward_hook(lambda m, inp, out: rows_seen.append(inp[0].shape[0]))
    loss, _ = causal_lm.loss(model, batch, ObjectiveConfig(chunk_size=5))
    loss.backward()  # recomputation in backward goes through the same head
    assert rows_seen and max(rows_seen) <= 5
    # every target row projected twice (forward, recomputed in backward), plus the one position
    # per row that the outer forward computes (logits_to_keep=1): never all rows at once
    assert sum(rows_seen) == 2 * causal_lm.count_targets(batch) + batch["input_ids"].shape[0]


def test_tied_embeddings_model(tiny_model_dir):
    model, batch = _model(tiny_model_dir, "qwen2"), _batch()
    ours, _ = causal_lm.loss(model, batch, ObjectiveConfig(chunk_size=4))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    plain = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="sum")
    torch.testing.assert_close(ours, plain, rtol=1e-6, atol=1e-5)
