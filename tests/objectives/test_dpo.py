"""The dpo objective: each loss equals its paper's formula on fixed log-probabilities; with the policy
equal to the reference the first loss is ln 2 / 1 / 1/(4β²); 4 micro-batches of 2 pairs equal one
batch of 8; log-probabilities come through a chunked head and equal the plain full-logits ones; the
reference options agree; dropout is off; a resumed run is bit-exact."""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import tunewright
from tunewright.config import load_config
from tunewright.errors import ConfigError
from tunewright.objectives import dpo, pairs, reference
from tunewright.training.logging import read_metrics

from preference_pairs import random_pairs as _pairs  # tests/objectives/ (its conftest puts it on the path)

BETA = 0.3


# ---------------------------------------------------------------- the formulas, written out per pair

def _sig(x):
    return 1 / (1 + math.exp(-x))


def _paper(loss, pc, pr, rc, rr, nc, nr, eps=0.0, gamma=0.5, lam=0.1, sft=0.0):
    """Each paper's per-pair loss in plain floats (symbols as in dpo.py's docstring)."""
    h = (pc - rc) - (pr - rr)  # Δ
    if loss == "sigmoid":  # DPO eq. 7; cDPO with eps
        out = -(1 - eps) * math.log(_sig(BETA * h)) - eps * math.log(_sig(-BETA * h))
    elif loss == "robust":  # Chowdhury et al. eq. 6
        out = (-(1 - eps) * math.log(_sig(BETA * h)) + eps * math.log(_sig(-BETA * h))) / (1 - 2 * eps)
    elif loss == "hinge":
        out = max(0.0, 1 - BETA * h)
    elif loss == "ipo":  # Azar et al. eq. 17
        out = (h - 1 / (2 * BETA)) ** 2
    elif loss == "simpo":  # Meng et al. eq. 6
        out = -math.log(_sig(BETA / nc * pc - BETA / nr * pr - gamma))
    else:  # orpo, Hong et al. eq. 6-7: NLL of the chosen answer + λ · odds-ratio loss
        def odds(lp, n):
            p = math.exp(lp / n)
            return p / (1 - p)
        out = -pc / nc - lam * math.log(_sig(math.log(odds(pc, nc) / odds(pr, nr))))
    return out + sft * (-pc / nc)


FIXED = dict(pc=[-12.0, -30.5, -4.2, -8.0, -50.0], pr=[-14.0, -29.0, -9.9, -8.0, -61.0],
             rc=[-13.0, -30.0, -5.0, -7.5, -52.0], rr=[-13.5, -31.0, -9.0, -8.5, -60.0],
             nc=[6, 11, 3, 4, 20], nr=[7, 10, 5, 4, 25])
CASES = [("sigmoid", {}), ("sigmoid", {"label_smoothing": 0.2}), ("robust", {"label_smoothing": 0.2}),
         ("hinge", {}), ("ipo", {}), ("simpo", {"simpo_gamma": 0.7}), ("orpo", {"orpo_lambda": 0.25}),
         ("sigmoid", {"sft_weight": 0.5})]


@pytest.mark.parametrize("loss, keys", CASES, ids=lambda v: str(v))
def test_each_loss_equals_its_papers_formula(loss, keys):
    cfg = dpo.Config(loss=loss, beta=BETA, **keys)
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in FIXED.items()}
    ref = (None, None) if loss in ("simpo", "orpo") else (t["rc"], t["rr"])
    got, r_c, r_r = dpo.pair_losses(cfg, t["pc"], t["pr"], *ref, t["nc"], t["nr"])
    named = {"label_smoothing": "eps", "simpo_gamma": "gamma", "orpo_lambda": "lam", "sft_weight": "sft"}
    want = [_paper(loss, *row, **{named[k]: v for k, v in keys.items()}) for row in zip(*FIXED.values())]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-6)
    if loss not in ("simpo", "orpo"):  # implicit rewards β (log π - log π_ref)
        torch.testing.assert_close(r_c, BETA * (t["pc"] - t["rc"]), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- on a tiny model

def _model(tiny_model_dir, dropout=0.0):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32,
                                                attention_dropout=dropout)


def _batch(encoded):
    return dpo.collate([[e] for e in encoded], 0, False)


def _perturb(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _plain_logps(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    targets = batch["labels"][:, 1:]
    lp = torch.log_softmax(logits[:, :-1], -1).gather(2, targets.clamp(min=0)[..., None]).squeeze(2)
    return (lp * (targets != -100)).sum(1)


def test_logps_through_the_chunked_head_equal_full_logits_and_never_project_more_than_a_chunk(
        tiny_model_dir, monkeypatch):
    model, batch = _model(tiny_model_dir), _batch(_pairs(4))
    head = model.get_output_embeddings()
    rows, real = [], F.linear

    def spy(x, weight, bias=None):
        if weight is head.weight:
            rows.append(x.shape[:-1].numel())
        return real(x, weight, bias)

    monkeypatch.setattr(F, "linear", spy)
    ours, lengths = pairs.sequence_logps(model, batch, chunk_size=5)
    ours.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    targets = int((batch["labels"][:, 1:] != -100).sum())
    # the outer forward's one position per row, then chunks of <= 5 rows, each recomputed in backward
    assert rows[0] == batch["input_ids"].shape[0] and max(rows[1:]) <= 5 and sum(rows[1:]) == 2 * targets
    monkeypatch.setattr(F, "linear", real)
    model.zero_grad()
    plain = _plain_logps(model, batch)
    plain.sum().backward()
    torch.testing.assert_close(ours, plain, rtol=1e-6, atol=1e-5)
    assert lengths.tolist() == (batch["labels"][:, 1:] != -100).sum(1).tolist()
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-5, atol=1e-5, msg=n)


@pytest.mark.parametrize("loss, keys, first", [
    ("sigmoid", {}, math.log(2)), ("sigmoid", {"label_smoothing": 0.1}, math.log(2)),
    ("robust", {"label_smoothing": 0.1}, math.log(2)), ("hinge", {}, 1.0), ("ipo", {}, 1 / (4 * BETA ** 2))])
def test_first_loss_with_the_policy_equal_to_the_reference(tiny_model_dir, loss, keys, first):
    model, batch = _model(tiny_model_dir), _batch(_pairs(3))
    cfg = dpo.Config(loss=loss, beta=BETA, reference="frozen_copy", **keys)
    total, metrics = dpo.loss(model, batch, cfg, dpo.setup(model, cfg))
    assert abs(float(total) / dpo.count(batch) - first) < 1e-6
    assert all(float(v) == 0 for v in metrics.values())  # rewards, margins and accuracy 0 at the start


@pytest.mark.parametrize("loss, keys", CASES, ids=lambda v: str(v))
def test_four_micro_batches_of_two_equal_one_batch_of_eight(tiny_model_dir, loss, keys):
    model = _model(tiny_model_dir)
    cfg = dpo.Config(loss=loss, beta=BETA, **keys)
    state = dpo.setup(model, cfg)  # the reference: the model before it is changed
    _perturb(model)
    encoded = _pairs(8, seed=3)
    whole, whole_m = dpo.loss(model, _batch(encoded), cfg, state)
    parts = [dpo.loss(model, _batch(encoded[k:k + 2]), cfg, state) for k in range(0, 8, 2)]
    assert abs(float(whole) - sum(float(p[0]) for p in parts)) < 1e-6 * max(1.0, abs(float(whole)))
    for name, v in whole_m.items():  # summed fp32 log-probs near -50 differ by padding at ~1e-6
        assert abs(float(v) - sum(float(p[1][name]) for p in parts)) < 1e-5, name
    assert float(whole_m["margins"]) != 0  # the policy moved: the check compares real numbers


def test_reference_options_agree_and_adapter_disabled_is_the_lora_default(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    encoded = _pairs(5, seed=2)
    data = SimpleNamespace(train=encoded[:3], eval=encoded[3:])
    batch = _batch(encoded)

    def chosen_reward(model, kind):
        cfg = dpo.Config(beta=BETA, reference=kind)
        state = dpo.setup(model, cfg, data)
        if kind is None and hasattr(model, "disable_adapter"):
            assert state._context == model.disable_adapter  # no second model in memory
        if kind is not None and not hasattr(model, "disable_adapter"):
            _perturb(model)  # trained after the reference was taken
        return float(dpo.loss(model, batch, cfg, state)[1]["rewards/chosen"])

    # LoRA (an adapter that is not zero): the default reference is the base model under it
    lora = get_peft_model(_model(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                             init_lora_weights=False))
    default, pre = chosen_reward(lora, None), chosen_reward(lora, "precomputed")
    assert default != 0 and abs(pre - default) < 1e-5
    # full fine-tuning: a frozen copy, or values computed once, of the model before it trains
    copied = chosen_reward(_model(tiny_model_dir), "frozen_copy")
    pre = chosen_reward(_model(tiny_model_dir), "precomputed")
    assert copied != 0 and abs(pre - copied) < 1e-5


def test_dropout_is_off_by_default(tiny_model_dir):
    batch = _batch(_pairs(2))
    for disable, same in ((False, False), (True, True)):
        model = _model(tiny_model_dir, dropout=0.5).train()
        dpo.setup(model, dpo.Config(disable_dropout=disable, reference="frozen_copy"))
        a, b = (pairs.sequence_logps(model, batch, 64)[0] for _ in range(2))
        assert torch.equal(a, b) == same


@pytest.mark.parametrize("keys, message", [
    ({"loss": "simpo", "reference": "frozen_copy"}, "objective.reference: loss simpo uses no reference"),
    ({"loss": "orpo", "reference": "adapter_disabled"}, "loss orpo uses no reference"),
    ({"loss": "hinge", "label_smoothing": 0.1}, "label_smoothing: not defined for loss hinge"),
    ({"loss": "robust"}, "loss robust needs the flip rate"),
    ({"loss": "orpo", "sft_weight": 1.0}, "ORPO's loss already holds the SFT term"),
    ({"loss": "dpo"}, "loss"),
    ({"name": "ipo"}, "a loss of objective dpo: write name: dpo, loss: ipo"),
])
def test_config_refuses_what_cannot_work(tiny_model_dir, keys, message):
    with pytest.raises(ConfigError, match=message):
        load_config(raw={"model": {"name": "m"}, "data": {"datasets": [{"path": "x.jsonl", "format": "preference"}]},
                         "objective": {"name": "dpo", **keys}})


# ---------------------------------------------------------------- resume

def _weights(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_resume_is_bit_exact(tmp_path, tiny_model_dir):
    rows = [{"prompt": f"What is {i} + {i}?", "chosen": str(2 * i), "rejected": f"It is {2 * i + 1}, I think."}
            for i in range(12)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def cfg(name, **train):
        return {"model": {"name": tiny_model_dir("llama")}, "method": {"name": "full"},
                "objective": {"name": "dpo", "reference": "precomputed"},
                "data": {"datasets": [{"path": str(tmp_path / "p.jsonl"), "format": "preference"}],
                         "template": "chatml", "cutoff_len": 64},
                "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 3, "learning_rate": 1e-2, "seed": 3,
                          **train},
                "output": {"dir": str(tmp_path / "runs"), "name": name, "save_steps": 1}}

    whole = tunewright.train(cfg("whole"))
    cut = tmp_path / "runs" / "cut"
    shutil.copytree(whole.run_dir, cut)
    shutil.rmtree(cut / "final")
    hits = reference.COUNTERS["hits"]
    resumed = tunewright.train(cfg("cut", resume=str(cut / "checkpoints" / "step-1")))
    assert reference.COUNTERS["hits"] == hits + 1  # the reference values were read back, not recomputed
    want, got = _weights(whole.final_dir), _weights(resumed.final_dir)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)

    def log(run):
        return [{k: v for k, v in m.items() if k not in ("step_time", "tokens_per_s")} for m in read_metrics(run)]
    assert log(resumed.run_dir) == log(whole.run_dir)
    assert log(whole.run_dir)[-1]["margins"] != 0  # it trained
