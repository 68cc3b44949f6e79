"""TRL 1.16.0 as a test-only oracle (skipped where it is not installed): on a tiny model and a fixed
4-pair batch, our dpo loss equals DPOTrainer's for sigmoid, robust, hinge and IPO, the experimental
CPOTrainer's with loss_type=simpo and cpo_alpha=0, ORPOTrainer's, and our kto KTOTrainer's, on the
very tokens TRL's collators made (their prompt/completion split and padding).

Conventions compared like with like: TRL averages IPO's log-ratios per completion token; our `ipo`
follows the paper on summed log-probs, so the TRL number is checked against our IPO formula fed
per-token means; TRL's ORPO takes its NLL term over the whole chosen sequence (prompt included) as a
token mean over the batch, ours over the answer per pair, so that term is swapped before comparing.
TRL's loss is the mean over pairs; ours is the sum (the loop divides by pairs). bf16=False: TRL's
configs turn bf16 autocast on by default, which would run the reference in bf16."""

from __future__ import annotations

import tempfile

import pytest
import torch

from tunewright.data.types import Encoded
from tunewright.objectives import dpo, pairs, reference

trl = pytest.importorskip("trl", minversion="1.16.0")
BETA = 0.3


@pytest.fixture(scope="module")
def models(tiny_model_dir):
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


def _trl_loss(models, loss_type, **keys):
    tok, policy, ref, ds = models
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
def test_dpo_losses_equal_trls(models, loss, keys):
    theirs, batch = _trl_loss(models, loss, **keys)
    _, policy, ref, _ = models
    ours = _ours_on(batch)
    cfg = dpo.Config(loss=loss, beta=BETA, **keys)
    total, _ = dpo.loss(policy, ours, cfg, reference.Reference(ref))
    assert abs(float(total) / 4 - theirs) < 1e-5


def test_ipo_equals_trls_on_per_token_means(models):
    theirs, batch = _trl_loss(models, "ipo")
    _, policy, ref, _ = models
    ours = _ours_on(batch)
    logps, n = pairs.sequence_logps(policy, ours, 1024)
    with torch.no_grad():
        ref_logps, _ = pairs.sequence_logps(ref, ours, 1024)
    per_token = logps / n, ref_logps / n
    losses, _, _ = dpo.pair_losses(dpo.Config(loss="ipo", beta=BETA), per_token[0][:4], per_token[0][4:],
                                   per_token[1][:4], per_token[1][4:], n[:4], n[4:])
    assert abs(float(losses.mean()) - theirs) < 1e-5


def test_kto_equals_trls(models):
    from datasets import Dataset

    from tunewright.objectives import kto
    tok, moved, start, _ = models
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


def _paired_trainer_batch(models, kind, **keys):
    """(trainer, collated 4-pair batch) of TRL's experimental CPO or ORPO trainer."""
    tok, policy, _, ds = models
    if kind == "cpo":
        from trl.experimental.cpo import CPOConfig as Config, CPOTrainer as Trainer
    else:
        from trl.experimental.orpo import ORPOConfig as Config, ORPOTrainer as Trainer
    args = Config(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True, bf16=False, per_device_train_batch_size=4,
                  **keys)
    trainer = Trainer(model=policy, args=args, train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    return trainer, batch


def _ours_from_legacy(batch) -> dict:
    """TRL's legacy chosen_*/rejected_* batch (labels -100 on the prompt) as our pairs."""
    out = []
    for i in range(4):
        def seq(side):
            n = int(batch[f"{side}_attention_mask"][i].sum())
            ids, labels = batch[f"{side}_input_ids"][i, :n].tolist(), batch[f"{side}_labels"][i, :n].tolist()
            return ids, labels, next(k for k, x in enumerate(labels) if x != -100)
        (c_ids, c_lab, p), (r_ids, r_lab, q) = seq("chosen"), seq("rejected")
        assert p == q and c_ids[:p] == r_ids[:p]  # the same prompt tokens in both
        out.append(Encoded(c_ids, c_lab, meta={"prompt_len": p, "rejected": r_ids[p:], "rejected_labels": r_lab[p:]}))
    return dpo.collate([[e] for e in out], 0, False)


def test_simpo_equals_trls_cpo_trainer_with_cpo_alpha_0(models):
    trainer, batch = _paired_trainer_batch(models, "cpo", loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=0.6)
    policy = models[1]
    policy.train()
    theirs, _ = trainer.get_batch_loss_metrics(policy, batch)
    # TRL's simpo_gamma is the paper's γ (it subtracts γ/β inside β(...)), as ours
    total, _ = dpo.loss(policy, _ours_from_legacy(batch), dpo.Config(loss="simpo", beta=2.0, simpo_gamma=0.6), None)
    assert abs(float(total) / 4 - float(theirs)) < 1e-5


def test_orpo_equals_trls_on_its_nll_convention(models):
    trainer, batch = _paired_trainer_batch(models, "orpo", beta=0.25)
    policy = models[1]
    policy.train()
    theirs, _ = trainer.get_batch_loss_metrics(policy, batch)
    ours = _ours_from_legacy(batch)
    total, _ = dpo.loss(policy, ours, dpo.Config(loss="orpo", orpo_lambda=0.25), None)
    # TRL's NLL term is a token mean over the whole chosen sequences, prompt included, of the batch; ours
    # is the paper's, on the answer, a mean per pair (so micro-batches add up): swap that term and
    # compare the odds-ratio term as it is
    logps, n = pairs.sequence_logps(policy, ours, 1024)
    chosen = {k: ours[k][:4] for k in ("input_ids", "attention_mask")}
    chosen["labels"] = chosen["input_ids"].masked_fill(chosen["attention_mask"] == 0, -100)
    whole, whole_n = pairs.sequence_logps(policy, chosen, 1024)
    ours_as_trl = float(total) / 4 + float((logps[:4] / n[:4]).mean()) - float(whole.sum() / whole_n.sum())
    assert abs(ours_as_trl - float(theirs)) < 1e-5
