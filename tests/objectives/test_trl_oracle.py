"""TRL 1.16.0 as a test-only oracle (skipped where it is not installed): on a tiny model and a fixed
4-pair batch, our dpo loss equals DPOTrainer's for sigmoid, robust, hinge and IPO, on the very
tokens TRL's collator made (its prompt/completion split and padding).

Conventions compared like with like: TRL averages IPO's log-ratios per completion token; our `ipo`
follows the paper on summed log-probs, so the TRL number is checked against our IPO formula fed
per-token means. TRL's loss is the mean over pairs; ours is the sum (the loop divides by pairs)."""

from __future__ import annotations

import tempfile

import pytest
import torch

from tunewright.data.types import Encoded
from tunewright.objectives import dpo, pairs, reference

trl = pytest.importorskip("trl", minversion="1.16.0")
BETA = 0.3


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model_dir("llama")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.pad_token or tok.eos_token
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the policy moved away from the reference: the losses are not at their start
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    rows = [{"prompt": f"What is {i} plus {i}?", "chosen": f" {2 * i}", "rejected": f" It is {2 * i + 1} I think"}
            for i in range(4)]
    return tok, policy, ref, Dataset.from_list(rows)


def _trl_loss(setup, loss_type, **keys):
    tok, policy, ref, ds = setup
    # bf16=False: TRL turns bf16 autocast on by default (the reference forward would run in bf16)
    args = trl.DPOConfig(output_dir=tempfile.mkdtemp(), beta=BETA, loss_type=[loss_type], report_to=[], use_cpu=True,
                         bf16=False,
                         per_device_train_batch_size=4, **keys)
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    policy.train()
    return float(trainer.compute_loss(policy, batch)), batch


def _ours_on(batch) -> dict:
    """TRL's collated [chosen x4, rejected x4] rows as our pairs."""
    ids, mask, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    out = []
    for i in range(4):
        def seq(row):
            n = int(mask[row].sum())
            return ids[row, :n].tolist(), comp[row, :n].tolist()
        (c_ids, c_m), (r_ids, r_m) = seq(i), seq(i + 4)
        p = c_m.index(1)
        assert c_ids[:p] == r_ids[:p] and r_m.index(1) == p  # the same prompt tokens in both
        out.append(Encoded(c_ids, [-100] * p + c_ids[p:], meta={"prompt_len": p, "rejected": r_ids[p:],
                                                                 "rejected_labels": r_ids[p:]}))
    return dpo.collate([[e] for e in out], 0, False)


@pytest.mark.parametrize("loss, keys", [("sigmoid", {}), ("robust", {"label_smoothing": 0.2}), ("hinge", {})])
def test_dpo_losses_equal_trls(setup, loss, keys):
    theirs, batch = _trl_loss(setup, loss, **keys)
    _, policy, ref, _ = setup
    ours = _ours_on(batch)
    cfg = dpo.Config(loss=loss, beta=BETA, **keys)
    total, _ = dpo.loss(policy, ours, cfg, reference.Reference(ref))
    assert abs(float(total) / 4 - theirs) < 1e-5


def test_ipo_equals_trls_on_per_token_means(setup):
    theirs, batch = _trl_loss(setup, "ipo")
    _, policy, ref, _ = setup
    ours = _ours_on(batch)
    logps, n = pairs.sequence_logps(policy, ours, 1024)
    with torch.no_grad():
        ref_logps, _ = pairs.sequence_logps(ref, ours, 1024)
    per_token = logps / n, ref_logps / n
    losses, _, _ = dpo.pair_losses(dpo.Config(loss="ipo", beta=BETA), per_token[0][:4], per_token[0][4:],
                                   per_token[1][:4], per_token[1][4:], n[:4], n[4:])
    assert abs(float(losses.mean()) - theirs) < 1e-5


def test_kto_equals_trls(setup):
    from datasets import Dataset

    from tunewright.objectives import kto
    tok, moved, start, _ = setup
    rows = [{"prompt": f"What is {i} plus {i}?", "completion": f" {2 * i}" if i % 2 else f" It is {2 * i + 1} I think",
             "label": bool(i % 2)} for i in range(4)]
    z0 = []
    # both ways round: z0 is clamped to 0 one way, positive the other, and both must agree with TRL
    for policy, ref in ((moved, start), (start, moved)):
        args = trl.KTOConfig(output_dir=tempfile.mkdtemp(), beta=BETA, desirable_weight=1.0, undesirable_weight=0.8,
                             report_to=[], use_cpu=True, bf16=False, per_device_train_batch_size=4)
        trainer = trl.KTOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                                 processing_class=tok)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        policy.train()
        theirs = float(trainer.compute_loss(policy, batch))
        encoded = []
        for i in range(4):
            n = int(batch["attention_mask"][i].sum())
            ids, comp = batch["input_ids"][i, :n].tolist(), batch["completion_mask"][i, :n].tolist()
            p = comp.index(1)
            encoded.append(Encoded(ids, [-100] * p + ids[p:], meta={"prompt_len": p, "label": bool(batch["label"][i])}))
        ours = kto.collate([[e] for e in encoded], 0, False)
        for i in range(4):  # the mismatched rows we build are TRL's KL rows, token for token
            n = int(batch["KL_attention_mask"][i].sum())
            assert ours["input_ids"][4 + i, :n].tolist() == batch["KL_input_ids"][i, :n].tolist()
        cfg = kto.Config(beta=BETA, desirable_weight=1.0, undesirable_weight=0.8)
        total, metrics = kto.loss(policy, ours, cfg, reference.Reference(ref))
        assert abs(float(total) / 4 - theirs) < 1e-5
        z0.append(float(metrics["kl"]) / 4)
    assert min(z0) == 0 and max(z0) > 0
