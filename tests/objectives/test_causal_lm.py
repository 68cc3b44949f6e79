"""Causal-LM cross-entropy: the fused, chunked and full paths equal the plain loss and gradients, and
never project more than a chunk of rows at once."""

import pytest
import torch
import torch.nn.functional as F

from tunewright.config import parse_config
from tunewright.data.packing import collate_packed
from tunewright.data.types import Encoded
from tunewright.errors import ConfigError
from tunewright.models.methods import METHODS
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


def _packed_batch():
    g = torch.Generator().manual_seed(1)

    def example(n, prompt):
        ids = torch.randint(5, 400, (n,), generator=g).tolist()
        return Encoded(ids, [-100] * prompt + ids[prompt:])

    return collate_packed([[example(7, 3), example(9, 2)], [example(12, 4)]], pad_id=0)


def _plain(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="sum")


def test_chunked_loss_and_grads_equal_plain(tiny_model_dir):
    model, batch = _model(tiny_model_dir), _batch()
    ours, metrics = causal_lm.loss(model, batch, causal_lm.Config(chunk_size=7, cross_entropy="chunked"))
    ours.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    plain = _plain(model, batch)
    plain.backward()
    # the count stays a tensor: int() in loss() would wait for the GPU on every micro-batch
    assert metrics == {}  # the loop reports the mean loss and perplexity; nothing else to log
    assert causal_lm.count(batch) == int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(ours, plain, rtol=1e-6, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-5, atol=1e-5, msg=n)


def test_fused_full_finetune_equals_plain(tiny_model_dir):
    # every parameter trains, including the head's weight: grad_W comes from the fused forward
    model, batch = _model(tiny_model_dir), _batch()
    ours, _ = causal_lm.loss(model, batch, causal_lm.Config(chunk_size=7))  # fused is the default
    ours.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    plain = _plain(model, batch)
    plain.backward()
    torch.testing.assert_close(ours, plain, rtol=1e-6, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-5, atol=1e-5, msg=n)


def _head_rows(monkeypatch, head):
    """Rows projected by `head`'s weight, per call: nn.Linear and the fused path both use F.linear."""
    rows, real = [], F.linear

    def spy(x, weight, bias=None):
        if weight is head.weight:
            rows.append(x.shape[:-1].numel())
        return real(x, weight, bias)

    monkeypatch.setattr(F, "linear", spy)
    return rows


@pytest.mark.parametrize("mode, passes", [("chunked", 2), ("fused", 1)])
def test_output_projection_sees_at_most_one_chunk(tiny_model_dir, monkeypatch, mode, passes):
    model, batch = _model(tiny_model_dir), _batch()
    rows_seen = _head_rows(monkeypatch, model.get_output_embeddings())
    loss, _ = causal_lm.loss(model, batch, causal_lm.Config(chunk_size=5, cross_entropy=mode))
    loss.backward()  # chunked: recomputation in backward goes through the same head
    # the first call is the outer forward's one position per row (logits_to_keep=1)
    assert rows_seen[0] == batch["input_ids"].shape[0] and max(rows_seen[1:]) <= 5
    # chunked projects every target row twice (forward, recomputed in backward), fused once
    assert sum(rows_seen[1:]) == passes * causal_lm.count(batch)


def test_tied_embeddings_model(tiny_model_dir):
    model, batch = _model(tiny_model_dir, "qwen2"), _batch()
    ours, _ = causal_lm.loss(model, batch, causal_lm.Config(chunk_size=4))
    ours.backward()
    tied = model.get_input_embeddings().weight.grad.clone()
    model.zero_grad()
    plain = _plain(model, batch)
    plain.backward()
    torch.testing.assert_close(ours, plain, rtol=1e-6, atol=1e-5)
    # the shared matrix gets the embedding's and the head's gradient together
    torch.testing.assert_close(tied, model.get_input_embeddings().weight.grad, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the fused function on its own

def _head_and_rows(n, bias=True, d=16, vocab=50, seed=0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(d, vocab, bias=bias)
    hidden = torch.randn(n, d) * 3  # spread logits, so the softcap bends them
    targets = torch.randint(0, vocab, (n,))
    return head, hidden, targets


def _grads(fn, head, hidden, targets, chunk, softcap, scale=0.37):
    """Loss and (grad hidden, grad W, grad b) of `fn`, with a non-unit grad_output."""
    head.zero_grad(set_to_none=True)
    h = hidden.clone().requires_grad_(True)
    total = fn(h, targets, head, chunk, softcap)
    (total * scale).backward()
    bias = head.bias.grad if head.bias is not None else None
    return total.detach(), h.grad, head.weight.grad, bias


def _reference(h, y, head, chunk_size, softcap):
    logits = head(h).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits, y, reduction="sum")


@pytest.mark.parametrize("n, chunk, softcap, bias", [
    (37, 8, None, True),   # chunk does not divide N
    (5, 8, None, True),    # N smaller than a chunk
    (37, 8, 4.0, True),    # softcap on
    (16, 4, 4.0, False),   # no bias, chunk divides N
])
def test_fused_equals_reference_fp32(n, chunk, softcap, bias):
    head, hidden, targets = _head_and_rows(n, bias)
    ours = _grads(causal_lm.fused_linear_cross_entropy, head, hidden, targets, chunk, softcap)
    ref = _grads(_reference, head, hidden, targets, chunk, softcap)
    for name, a, b in zip(("loss", "hidden", "weight", "bias"), ours, ref):
        if b is None:
            assert a is None, name
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_fused_frozen_weight_computes_no_weight_grad():
    head, hidden, targets = _head_and_rows(20)
    head.requires_grad_(False)
    _, grad_h, grad_w, grad_b = _grads(causal_lm.fused_linear_cross_entropy, head, hidden, targets, 8, None)
    assert grad_w is None and grad_b is None
    _, ref_h, _, _ = _grads(_reference, head, hidden, targets, 8, None)
    torch.testing.assert_close(grad_h, ref_h, rtol=1e-5, atol=1e-6)


def test_fused_no_rows_and_no_grad():
    head, hidden, targets = _head_and_rows(0)
    h = hidden.requires_grad_(True)
    total = causal_lm.fused_linear_cross_entropy(h, targets, head, 8)
    total.backward()
    assert total.item() == 0 and h.grad.shape == (0, 16) and not head.weight.grad.any()

    # the chunked path too: a micro-batch without target rows still reaches backward (no error)
    h = hidden.detach().requires_grad_(True)
    total = causal_lm.chunked_cross_entropy(h, targets, head, 8)
    total.backward()
    assert total.item() == 0 and h.grad.shape == (0, 16)

    head, hidden, targets = _head_and_rows(37)
    with_grad = causal_lm.fused_linear_cross_entropy(hidden.requires_grad_(True), targets, head, 8)
    with torch.no_grad():
        without = causal_lm.fused_linear_cross_entropy(hidden, targets, head, 8)
    assert not without.requires_grad
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)


def test_fused_bf16_autocast_close_to_fp32_and_to_chunked():
    head, hidden, targets = _head_and_rows(64, vocab=300)
    ref = _grads(_reference, head, hidden, targets, 16, 4.0, scale=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = _grads(causal_lm.fused_linear_cross_entropy, head, hidden, targets, 16, 4.0, scale=1.0)
        chunked = _grads(causal_lm.chunked_cross_entropy, head, hidden, targets, 16, 4.0, scale=1.0)
    for name, f, c, r in zip(("loss", "hidden", "weight", "bias"), fused, chunked, ref):
        assert f.dtype == r.dtype, name  # gradients come back in each input's dtype (fp32 here)
        scale = r.abs().max()
        assert (f - r).abs().max() <= 2e-2 * scale, name  # bf16 matmuls vs fp32
        if name in ("loss", "hidden"):
            # the same bf16 matmuls and fp32 softmax as autocast's backward of the chunked path
            # (the softmax rounds differently in the last fp32 bit: ~1e-5 after the bf16 cast)
            assert (f - c).abs().max() <= 1e-4 * scale, name
        else:
            # W and b: summed over chunks in fp32 here, in bf16 per chunk there, so nearer fp32
            assert (f - r).abs().max() <= (c - r).abs().max(), name


# ---------------------------------------------------------------- through a LoRA model

def _lora(tiny_model_dir, **cfg):
    model = _model(tiny_model_dir)
    model = METHODS.get("lora").apply(model, METHODS.get("lora").Config(r=4, lora_dropout=0.0, **cfg))
    with torch.no_grad():  # B starts at zero; move it so the adapters change the loss
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    return model


def _loss_and_adapter_grads(model, batch, mode):
    model.zero_grad(set_to_none=True)
    total, _ = causal_lm.loss(model, batch, causal_lm.Config(cross_entropy=mode, **({} if mode == "full" else {"chunk_size": 6})))
    total.backward()
    return total.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("packed", [False, True])
def test_lora_paths_agree(tiny_model_dir, packed):
    model = _lora(tiny_model_dir)
    batch = _packed_batch() if packed else _batch()
    results = {mode: _loss_and_adapter_grads(model, batch, mode) for mode in ("fused", "chunked", "full")}
    loss_full, grads_full = results["full"]
    assert grads_full and all("lora_" in n for n in grads_full)
    for mode in ("fused", "chunked"):
        loss, grads = results[mode]
        torch.testing.assert_close(loss, loss_full, rtol=1e-5, atol=1e-5, msg=mode)
        assert grads.keys() == grads_full.keys()
        for n in grads:
            torch.testing.assert_close(grads[n], grads_full[n], rtol=1e-5, atol=1e-5, msg=f"{mode} {n}")


def test_peft_wrapped_head_falls_back_to_chunked(tiny_model_dir):
    # LoRA on lm_head: the head is a peft layer whose adapter must get gradients from the loss
    model = _lora(tiny_model_dir, target_modules=["q_proj", "lm_head"])
    assert type(model.get_output_embeddings()) is not torch.nn.Linear
    fused, fused_grads = _loss_and_adapter_grads(model, _batch(), "fused")
    chunked, chunked_grads = _loss_and_adapter_grads(model, _batch(), "chunked")
    assert any("lm_head" in n for n in fused_grads)
    torch.testing.assert_close(fused, chunked, rtol=0, atol=0)
    for n in chunked_grads:
        torch.testing.assert_close(fused_grads[n], chunked_grads[n], rtol=0, atol=0, msg=n)


# ---------------------------------------------------------------- config

def test_cross_entropy_config_errors():
    raw = {"data": {"datasets": [{"path": "x.jsonl"}]}}
    with pytest.raises(ConfigError, match=r"objective\.cross_entropy.*'fused', 'chunked' or 'full'"):
        parse_config({**raw, "objective": {"cross_entropy": "fast"}}, "run.yaml")
    with pytest.raises(ConfigError, match=r"objective\.cross_entropy.*seq2seq"):
        parse_config({**raw, "objective": {"name": "seq2seq", "cross_entropy": "chunked"}}, "run.yaml")
    with pytest.raises(ConfigError, match=r"objective\.chunk_size has no effect with objective\.cross_entropy: full"):
        parse_config({**raw, "objective": {"cross_entropy": "full", "chunk_size": 64}}, "run.yaml")
    assert parse_config({**raw, "objective": {"cross_entropy": "full"}}, "run.yaml").objective.cross_entropy == "full"


@pytest.mark.parametrize("name", ["prompt", "prefix"])
def test_virtual_tokens_carry_no_loss(name, tiny_model_dir):
    """Prompt tuning runs the decoder over n virtual positions + the T input positions; the loss is
    the input's own next-token cross-entropy, read by hand from the model's logits at the last T
    positions (prefix tuning adds no positions: the same formula, n = 0). A padded row included."""
    method = METHODS.get(name)
    model = method.apply(_model(tiny_model_dir), method.Config(num_virtual_tokens=4)).eval()
    batch = _batch()
    with torch.no_grad():
        got, _ = causal_lm.loss(model, batch, causal_lm.Config())
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits[:, -batch["input_ids"].shape[1]:]  # [B, T, vocab]: the input's own positions
        want = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                               ignore_index=-100, reduction="sum")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
