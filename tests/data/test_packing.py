"""Packing: first-fit-decreasing bins, the collators, and the key property that a packed example
sees exactly what it would see alone (transformers' position-id packed attention)."""

from __future__ import annotations

import random

import pytest
import torch

from tunewright.data.packing import collate_packed, collate_padded, pack, packing_efficiency
from tunewright.data.types import IGNORE_INDEX, Encoded
from tunewright.errors import ConfigError


def naive_ffd(lengths, max_len):
    """Reference first-fit-decreasing, O(n * bins)."""
    bins, room = [], []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, free in enumerate(room):
            if free >= lengths[i]:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(max_len - lengths[i])
    return bins


def test_pack_first_fit_decreasing_by_hand():
    assert pack([5, 4, 3, 3, 2, 1], 8) == [[0, 2], [1, 3, 5], [4]]
    assert pack([], 8) == []


def test_pack_matches_the_reference_and_respects_max_len():
    rng = random.Random(0)
    for _ in range(20):
        lengths = [rng.randint(1, 64) for _ in range(rng.randint(1, 300))]
        bins = pack(lengths, 64)
        assert bins == naive_ffd(lengths, 64)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= 64 for b in bins)


def test_pack_refuses_an_example_longer_than_a_row():
    with pytest.raises(ConfigError, match="example 1 has 9 tokens, more than the packed row length 8"):
        pack([3, 9], 8)


def test_packing_efficiency():
    lengths = [5, 4, 3, 3, 2, 1]
    assert packing_efficiency(lengths, pack(lengths, 8), 8) == pytest.approx(18 / 24)


def enc(ids, labels=None):
    return Encoded(list(ids), list(labels if labels is not None else ids))


def test_collate_packed_layout():
    rows = [[enc([11, 12, 13]), enc([21, 22])], [enc([31, 32, 33, 34], [-100, -100, 33, 34])]]
    b = collate_packed(rows, pad_id=0)
    assert "attention_mask" not in b  # its presence would switch off the packed-sequence mask
    assert b["input_ids"].tolist() == [[11, 12, 13, 21, 22], [31, 32, 33, 34, 0]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert b["labels"].tolist() == [[-100, 12, 13, -100, 22], [-100, -100, 33, 34, -100]]
    assert b["seq_lens"] == [[3, 2], [4]] and b["num_tokens"] == 9


def test_collate_padded_right_and_left():
    batch = [enc([1, 2, 3]), enc([4], [IGNORE_INDEX])]
    right = collate_padded(batch, pad_id=9)
    assert right["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right["labels"].tolist() == [[1, 2, 3], [-100, -100, -100]]
    left = collate_padded(batch, pad_id=9, side="left")
    assert left["input_ids"].tolist() == [[1, 2, 3], [9, 9, 4]] and left["attention_mask"].tolist()[1] == [0, 0, 1]


# ------------------------------------------------------------------ packed logits == alone logits

def max_error(model, batch, rows, **forward):
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **forward).logits
    worst = 0.0
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            alone = model(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits[0]
            worst = max(worst, (out[r, at:at + n] - alone).abs().max().item())
            at += n
    return worst


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_examples_see_only_themselves(tiny_model_dir, arch, attn):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch), dtype=torch.float32, attn_implementation=attn)
    g = torch.Generator().manual_seed(0)

    def example(n):
        return enc(torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist())

    rows = [[example(n) for n in (7, 12, 4)], [example(9), example(5)], [example(6)]]  # last row padded
    batch = collate_packed(rows, pad_id=0)
    with torch.no_grad():
        model.train()  # the tiny configs have no dropout, so train mode is deterministic
        assert max_error(model, batch, rows, use_cache=False) < 1e-5
        model.eval()
        assert max_error(model, batch, rows, use_cache=False) < 1e-5
        # The trap: eval's default use_cache=True makes a KV cache, transformers then ignores the
        # position-id boundaries and packed examples attend to each other.
        assert max_error(model, batch, rows) > 1e-2
