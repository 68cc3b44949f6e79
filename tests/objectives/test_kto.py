"""The kto objective: the loss equals the paper's formula on fixed log-probabilities; the reference
point z0 is estimated per micro-batch from each prompt with the previous row's answer, clamped at 0 and
without gradient; with the policy equal to the reference every row's loss is w/2."""

from __future__ import annotations

import math

import pytest
import torch

from tunewright.config import load_config
from tunewright.data.types import Encoded
from tunewright.errors import ConfigError
from tunewright.objectives import kto, pairs, reference

BETA = 0.2


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_loss_equals_the_papers_formula():
    # Ethayarajh et al. 2024, eq. 8: v = λ_D σ(β(r - z0)) for desirable, λ_U σ(β(z0 - r)) otherwise;
    # the loss is λ_y - v
    cfg = kto.Config(beta=BETA, desirable_weight=1.5, undesirable_weight=0.7)
    logps, ref = [-10.0, -22.0, -5.5, -40.0], [-12.0, -20.0, -5.0, -41.0]
    labels, z0 = [True, False, True, False], 0.8
    got, rewards = kto.kto_losses(cfg, torch.tensor(logps, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64),
                                  torch.tensor(z0, dtype=torch.float64), torch.tensor(labels))
    want = []
    for lp, rp, good in zip(logps, ref, labels):
        r = lp - rp
        want.append(1.5 - 1.5 * _sig(BETA * (r - z0)) if good else 0.7 - 0.7 * _sig(BETA * (z0 - r)))
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(rewards, BETA * (torch.tensor(logps) - torch.tensor(ref)).double(), rtol=0, atol=1e-6)


def _rows(n, seed=0):
    g = torch.Generator().manual_seed(seed)

    def ids(k):
        return torch.randint(5, 400, (k,), generator=g).tolist()

    out = []
    for i in range(n):
        p, c = ids(3 + i % 3), ids(2 + (i * 3) % 5)
        out.append(Encoded(p + c, [-100] * len(p) + c, "x.jsonl", i + 1, {"prompt_len": len(p), "label": i % 2 == 0}))
    return out


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32)


def test_kl_rows_pair_each_prompt_with_the_previous_rows_answer():
    rows = _rows(3)
    for i, kl in enumerate(kto.kl_rows(rows)):
        e, other = rows[i], rows[(i - 1) % 3]
        p, q = e.meta["prompt_len"], other.meta["prompt_len"]
        assert kl.input_ids == e.input_ids[:p] + other.input_ids[q:]
        assert kl.labels == [-100] * p + other.input_ids[q:]


def test_reference_point_is_the_clamped_batch_mean_of_mismatched_log_ratios(tiny_model_dir):
    model = _model(tiny_model_dir)
    cfg = kto.Config(beta=BETA, reference="frozen_copy")
    state = kto.setup(model, cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    rows = _rows(4)
    batch = kto.collate([[e] for e in rows], 0, False)
    total, metrics = kto.loss(model, batch, cfg, state)
    # by hand: prompt i with answer i-1, policy minus reference, averaged over the batch, at least 0
    mismatched = pairs.collate_rows(kto.kl_rows(rows), 0)
    with torch.no_grad():
        ratio = pairs.sequence_logps(model, mismatched, 64)[0] - \
            pairs.sequence_logps(state.model, mismatched, 64)[0]
        matched = pairs.collate_rows(rows, 0)
        r = pairs.sequence_logps(model, matched, 64)[0] - pairs.sequence_logps(state.model, matched, 64)[0]
    z0 = max(0.0, float(ratio.mean()))
    assert abs(float(metrics["kl"]) / 4 - z0) < 1e-5
    want, _ = kto.kto_losses(cfg, r, torch.zeros(4), torch.tensor(z0), batch["desirable"])
    assert abs(float(total) - float(want.sum())) < 1e-5
    # z0 carries no gradient: the loss's gradient is that of the per-row terms with z0 a constant
    total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert metrics["desirable"] == 2 and metrics["undesirable"] == 2 and kto.count(batch) == 4
    # the other way round (the moved model as the reference) the mean is negative and z0 is clamped to 0
    with torch.no_grad():
        _, swapped = kto.loss(state.model, batch, cfg, reference.Reference(model))
    assert float(ratio.mean()) > 0 and float(swapped["kl"]) == 0


def test_policy_equal_to_reference_gives_half_the_weight_per_row(tiny_model_dir):
    model = _model(tiny_model_dir)
    cfg = kto.Config(beta=BETA, desirable_weight=1.0, undesirable_weight=0.6)
    batch = kto.collate([[e] for e in _rows(4)], 0, False)
    total, metrics = kto.loss(model, batch, cfg, kto.setup(model, cfg.model_copy(update={"reference": "frozen_copy"})))
    assert abs(float(total) - (2 * 0.5 + 2 * 0.3)) < 1e-6 and float(metrics["kl"]) == 0


def test_precomputed_reference_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="precomputed is not possible with kto"):
        load_config(raw={"model": {"name": "m"}, "data": {"datasets": [{"path": "x.jsonl", "format": "unpaired"}]},
                         "objective": {"name": "kto", "reference": "precomputed"}})


def test_trains_through_the_loop_from_unpaired_rows(tmp_path, tiny_model_dir):
    import json

    import tunewright
    from tunewright.training.logging import read_metrics
    rows = [{"prompt": f"What is {i} + {i}?", "completion": str(2 * i) if i % 2 else f"Maybe {2 * i + 1}.",
             "label": bool(i % 2)} for i in range(8)]
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = tunewright.train({
        "model": {"name": tiny_model_dir("llama")}, "method": {"name": "lora", "r": 4},
        "objective": {"name": "kto", "undesirable_weight": 0.5},
        "data": {"datasets": [{"path": str(tmp_path / "u.jsonl"), "format": "unpaired"}], "template": "chatml"},
        "train": {"batch_size": 4, "micro_batch_size": 4, "max_steps": 2, "learning_rate": 1e-2},
        "output": {"dir": str(tmp_path / "runs"), "name": "kto"}})
    first = read_metrics(result.run_dir)[0]
    # LoRA starts at the base model (the adapter_disabled reference): z0 = 0 and each row's loss is w/2
    assert first["target_rows"] == 4 and first["kl"] == 0 and first["desirable"] + first["undesirable"] == 4
    assert abs(first["loss"] - (first["desirable"] * 0.5 + first["undesirable"] * 0.25) / 4) < 1e-6
