"""`tunewright verify CONFIG`: the invariants users get bitten by, checked on their own model,
data and settings in a few minutes. Each check prints pass/fail with the measured difference.

  accumulation   k micro-batches give the gradient of one batch of the same examples
  packing        a packed batch gives the loss of the same examples padded
  merge          a LoRA adapter merged into the weights gives the adapter's logits
  template       the generation prompt's tokens are the first tokens of the training example
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


def _grads(model, objective, cfg, batches: list[dict]) -> dict[str, torch.Tensor]:
    """Gradients of the summed token loss over `batches`, normalized by their total target count."""
    model.zero_grad(set_to_none=True)
    total = sum(objective.count_targets(b) for b in batches)
    for b in batches:
        loss, _ = objective.loss(model, b, cfg.objective)
        (loss / total).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _accumulation(built, objective, cfg, examples) -> Check:
    from tunewright.data.packing import collate_padded
    pad = built.tokenizer.pad_token_id
    k = 2
    one = _grads(built.model, objective, cfg, [collate_padded(examples, pad)])
    many = _grads(built.model, objective, cfg, [collate_padded(examples[i::k], pad) for i in range(k)])
    diff = max(float((one[n] - many[n]).abs().max()) for n in one)
    scale = max(float(g.abs().max()) for g in one.values())
    return Check("accumulation", diff <= 1e-5 * max(1.0, scale),
                 f"max |grad diff| {diff:.2e} (largest grad {scale:.2e}), {k} micro-batches vs 1")


def _packing(built, objective, cfg, examples) -> Check:
    from tunewright.data.packing import collate_packed, collate_padded
    with torch.no_grad():
        padded, _ = objective.loss(built.model, collate_padded(examples, built.tokenizer.pad_token_id), cfg.objective)
        packed, _ = objective.loss(built.model, collate_packed([examples], built.tokenizer.pad_token_id), cfg.objective)
    rel = abs(float(packed) - float(padded)) / max(1e-12, abs(float(padded)))
    return Check("packing", rel <= 1e-4, f"relative loss diff {rel:.2e} (packed {float(packed):.5f}, "
                                         f"padded {float(padded):.5f}; {len(examples)} examples in one row)")


def _merge(built, examples) -> Check:
    if not hasattr(built.model, "merge_and_unload"):
        return Check("merge", True, f"skipped: method {built.cfg.method.name!r} has nothing to merge")
    model = copy.deepcopy(built.model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B starts at zero: perturb it so the merge has something to fold in
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    ids = torch.tensor([examples[0].input_ids])
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
        after = model.merge_and_unload()(input_ids=ids).logits
    diff = float((before - after).abs().max())
    return Check("merge", diff <= 1e-4, f"max |logit diff| {diff:.2e} after merge_and_unload")


def _template(built, examples_raw, encoded) -> Check:
    from tunewright.data.tokenize import encode_prompt
    for ex, enc in zip(examples_raw, encoded):
        if ex.messages:
            last = max(i for i, m in enumerate(ex.messages) if m.role == "assistant")
            prompt = encode_prompt(ex.messages[:last], built.tokenizer, built.template,
                                   system_prompt=built.cfg.data.system_prompt)
            ok = enc.input_ids[:len(prompt)] == prompt
            return Check("template", ok, f"generation prompt ({len(prompt)} tokens) is {'' if ok else 'NOT '}a prefix "
                                         f"of the training example ({len(enc.input_ids)} tokens)")
    return Check("template", True, "skipped: no conversational rows")


def _eos(built) -> Check:
    from tunewright.data.report import eos_coverage
    from tunewright.data.templates import end_of_turn_ids
    have, total = eos_coverage(built.data.train, end_of_turn_ids(built.tokenizer, built.template))
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
        raw["train"].update(max_steps=2, resume=None)
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
    from tunewright.objectives import resolve_objective
    from tunewright.run import build

    torch.manual_seed(cfg.train.seed)
    built = build(cfg)
    built.model.train()
    for module in built.model.modules():  # dropout would make every comparison noisy
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    objective = resolve_objective(cfg.objective.name, built.kind)
    examples = built.data.train[:n_examples]
    checks = [_accumulation(built, objective, cfg, examples)]
    if built.kind == "causal_lm":
        checks.append(_packing(built, objective, cfg, examples))
    checks.append(_merge(built, examples))
    if built.kind == "causal_lm":
        raw, _, _ = build_splits(cfg.data, seed=cfg.train.seed)
        lookup = {(e.source, e.line): e for e in raw}
        pairs = [(lookup[(e.source, e.line)], e) for e in built.data.train[:20] if (e.source, e.line) in lookup]
        checks.append(_template(built, [p[0] for p in pairs], [p[1] for p in pairs]))
        checks.append(_eos(built))
    if resume:
        del built  # the resume check builds its own runs
        checks.append(_resume(cfg))
    return checks
