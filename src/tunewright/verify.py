"""`tunewright verify CONFIG`: the invariants users get bitten by, checked on their own model,
data and settings in a few minutes. Each check prints pass/fail with the measured difference.

  accumulation   one step of the real loop over k micro-batches updates the weights as over one batch
  packing        a packed batch gives the loss of the same examples padded (skipped, with the
                 reason, for a method that refuses packing)
  merge          the method's own merge (LoRA: the adapter folded into the weights) keeps the logits
                 (skipped, with the reason, for a method that cannot merge)
  template       the prompt generation/eval build for a row is the start of its training tokens
  eos            every training example's labels hold an end-of-turn/EOS token
  resume         2 steps straight equal 1 step, a checkpoint, a resume and 1 step (bit for bit on CPU)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

__all__ = ["Check", "run_checks"]


@dataclass
class Check:
    name: str
    passed: bool
    measured: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:<13} {self.measured}"


def _loop_update(built, objective, cfg, micro_batches: list[list], accelerator) -> dict[str, torch.Tensor]:
    """The update of one optimizer step of the real loop (`training.loop.fit`) over `micro_batches`.

    SGD at lr 1 without clipping makes the update the gradient exactly as the loop normalised it
    (a copy of its formula here would check the copy, not the loop). The trainable weights are put
    back afterwards, so the model is unchanged for the next check."""
    from tunewright.config import EvalConfig
    from tunewright.training import loop

    model = built.model
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.SGD(list(params.values()), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    rows = sum(len(mb) for mb in micro_batches)
    train_cfg = cfg.train.model_copy(update={"batch_size": rows, "micro_batch_size": len(micro_batches[0]),
                                             "max_grad_norm": None})
    parts = loop.LoopParts(model=model, objective=objective, objective_cfg=built.objective_cfg, optimizer=optimizer,
                           scheduler=scheduler, accelerator=accelerator, plan=lambda epoch: micro_batches,
                           collate=lambda rows: objective.collate(rows, built.tokenizer.pad_token_id, False))
    try:
        loop.fit(parts, train_cfg, EvalConfig(), total_steps=1)
        return {n: before[n] - p.detach() for n, p in params.items()}
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(before[n])


def _accumulation(built, objective, cfg, examples) -> Check:
    """One step over the examples as 1 micro-batch and as 2: the loop must give the same update.
    The halves hold the fewest and the most target tokens, so normalising each micro-batch by its
    own count (instead of the step's) shows."""
    from tunewright.data.types import IGNORE_INDEX

    if len(examples) < 2:
        return Check("accumulation", True, f"skipped: {len(examples)} training example, 2 micro-batches need 2")
    from tunewright.training.accelerator import make_accelerator

    acc = make_accelerator("fp32", cpu=True)  # verify's numeric checks run in fp32 on the CPU
    targets = lambda e: sum(1 for t in e.labels if t != IGNORE_INDEX)  # noqa: E731
    rows = [[e] for e in sorted(examples, key=targets)]  # a micro-batch is a list of rows, a row a list of examples
    half = len(rows) // 2
    one = _loop_update(built, objective, cfg, [rows[:2 * half]], acc)
    two = _loop_update(built, objective, cfg, [rows[:half], rows[half:2 * half]], acc)
    diff = max(float((one[n] - two[n]).abs().max()) for n in one)
    scale = max(float(g.abs().max()) for g in one.values())
    counts = [sum(targets(r[0]) for r in mb) for mb in (rows[:half], rows[half:2 * half])]
    return Check("accumulation", scale > 0 and diff <= 1e-5 * max(1.0, scale),
                 f"max |update diff| {diff:.2e} (largest update {scale:.2e}), one loop step as 2 micro-batches "
                 f"({counts[0]} and {counts[1]} target tokens) vs 1")


def _packing(built, objective, cfg, examples) -> Check:
    from tunewright.data.packing import collate_packed, collate_padded
    from tunewright.models.methods import misfit

    packed_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"packing": True})})
    refused = misfit(built.method, packed_cfg)
    if refused:  # prompt and prefix tuning: packing is refused when the config is read
        return Check("packing", True, f"skipped: {refused}")
    with torch.no_grad():
        padded, _ = objective.loss(built.model, collate_padded(examples, built.tokenizer.pad_token_id),
                                   built.objective_cfg)
        packed, _ = objective.loss(built.model, collate_packed([examples], built.tokenizer.pad_token_id),
                                   built.objective_cfg)
    rel = abs(float(packed) - float(padded)) / max(1e-12, abs(float(padded)))
    return Check("packing", rel <= 1e-4, f"relative loss diff {rel:.2e} (packed {float(packed):.5f}, "
                                         f"padded {float(padded):.5f}; {len(examples)} examples in one row)")


def _merge(built, examples) -> Check:
    """The method's own `merge` (what `tunewright merge` runs) must keep the adapted model's logits."""
    from tunewright.models.params import perturb_trainable

    method = built.cfg.method.name
    if built.method.CANNOT_MERGE:
        return Check("merge", True, f"skipped: not mergeable ({built.method.CANNOT_MERGE})")
    model = copy.deepcopy(built.model)
    perturb_trainable(model, 0.02, seed=0)  # so the merge has something to fold in
    ids = torch.tensor([examples[0].input_ids])
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
        merged = built.method.merge(model)
        if merged is model:
            return Check("merge", True, f"skipped: method {method!r} has nothing to merge")
        after = merged(input_ids=ids).logits
    diff = float((before - after).abs().max())
    return Check("merge", diff <= 1e-4, f"max |logit diff| {diff:.2e} after merging (methods.{method}.merge)")


def _template(built, examples_raw, encoded) -> Check:
    """The prompt that generation, `tunewright eval` and evaluation during training build for a row
    (eval.compare.rows_of -> eval.generate.prompt_ids) must be the start of the trained tokens."""
    from tunewright.eval import generate
    from tunewright.eval.compare import rows_of

    for ex, enc in zip(examples_raw, encoded):
        if ex.messages:
            row = rows_of([ex])[0]
            prompt = generate.prompt_ids(row.messages, built.tokenizer, built.template,
                                         system_prompt=built.cfg.data.system_prompt)
            ok = enc.input_ids[:len(prompt)] == prompt
            return Check("template", ok, f"generation prompt ({len(prompt)} tokens) is {'' if ok else 'NOT '}a prefix "
                                         f"of the training example ({len(enc.input_ids)} tokens)")
    return Check("template", True, "skipped: no conversational rows")


def _eos(built) -> Check:
    from tunewright.data.report import eos_coverage
    have, total = eos_coverage(built.data.train, built.objective.end_ids(built.tokenizer, built.template))
    return Check("eos", have == total, f"{have:,} of {total:,} examples train an end-of-turn/EOS token")


def _resume(cfg) -> Check:
    """Three optimizer steps in all on the user's model: 2 straight; 1, save, resume, 1."""
    import shutil
    import tempfile
    from pathlib import Path

    from safetensors.torch import load_file

    from tunewright.config import load_config
    from tunewright.run import train

    def weights(folder: Path) -> dict:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    with tempfile.TemporaryDirectory() as tmp:
        raw = cfg.model_dump(mode="json")
        raw["train"].update(max_steps=2, resume=None, mixed_precision="fp32")  # numeric checks in fp32, as the others
        raw["eval"] = {}  # evaluation changes nothing here and costs time
        raw["output"] = {"dir": tmp, "name": "straight", "save_steps": 1}
        straight = train(load_config(raw=raw))
        cut = Path(tmp) / "resumed"
        shutil.copytree(straight.run_dir, cut)
        for later in ("checkpoints/step-2", "final"):
            shutil.rmtree(cut / later)
        raw["output"]["name"], raw["train"]["resume"] = "resumed", str(cut / "checkpoints" / "step-1")
        resumed = train(load_config(raw=raw))
        a, b = weights(straight.final_dir), weights(resumed.final_dir)
        diff = max((float((a[k].float() - b[k].float()).abs().max()) for k in a), default=float("inf")) \
            if a.keys() == b.keys() else float("inf")
    return Check("resume", diff == 0.0, f"max |weight diff| {diff:.2e} between 2 straight steps and 1 + resume + 1")


def run_checks(cfg, n_examples: int = 4, resume: bool = True) -> list[Check]:
    """Build the run of `cfg` (data, model, method; no training) and run every check."""
    from tunewright.data.mixture import build_splits
    from tunewright.run import build

    torch.manual_seed(cfg.train.seed)
    built = build(cfg)
    built.model.train()
    for module in built.model.modules():  # dropout would make every comparison noisy
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    objective = built.objective
    examples = built.data.train[:n_examples]
    checks = [_accumulation(built, objective, cfg, examples)]
    if objective.PACKABLE:
        checks.append(_packing(built, objective, cfg, examples))
    checks.append(_merge(built, examples))
    if objective.TEMPLATED:
        raw, _, _ = build_splits(cfg.data, seed=cfg.train.seed)
        lookup = {(e.source, e.line): e for e in raw}
        pairs = [(lookup[(e.source, e.line)], e) for e in built.data.train[:20] if (e.source, e.line) in lookup]
        checks.append(_template(built, [p[0] for p in pairs], [p[1] for p in pairs]))
        checks.append(_eos(built))
    if resume:
        del built  # the resume check builds its own runs
        checks.append(_resume(cfg))
    return checks
