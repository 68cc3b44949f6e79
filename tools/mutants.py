"""The mutants of `tools/mutate.py`: small realistic bugs, each a search/replace on one file.

`old` must occur exactly once in `file` (tests/tools/test_mutate.py checks it, so an unrelated
edit that moves the text shows up at once); `tests` are the test files (or node ids) that must
fail with the bug. `row` links the mutants found by the audit of issue 12 to its table; the
others were caught already and are kept so they stay caught.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Mutant", "MUTANTS"]


@dataclass(frozen=True)
class Mutant:
    id: str
    what: str  # the bug, in words
    file: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]
    row: int | None = None  # issue 12's table row, for the mutants its audit let through


MUTANTS = [
    # ------------------------------------------------------------ issue 12's rows: survived the audit
    Mutant("cache-key-train-on-inputs", "train_on_inputs left out of the tokenization cache key",
           "src/tunewright/data/cache.py",
           old='"cutoff_len", "truncation", "train_on_inputs", "train_on_turns",',
           new='"cutoff_len", "truncation", "train_on_turns",',
           tests=("tests/data/test_cache.py",), row=1),
    Mutant("loop-clip-inf", "gradient clipping given inf as its limit",
           "src/tunewright/training/loop.py",
           old="train_cfg.max_grad_norm))",
           new='float("inf")))',
           tests=("tests/training/test_loop.py",), row=2),
    Mutant("lora-always-rslora", "LoRA always built with rsLoRA scaling (alpha / sqrt(r))",
           "src/tunewright/models/methods/lora.py",
           old="use_rslora=cfg.use_rslora,",
           new="use_rslora=True,",
           tests=("tests/models/test_methods.py",), row=3),
    Mutant("secrets-no-key-value-redaction", "token=/password= values no longer redacted (only hf_ tokens)",
           "src/tunewright/secrets.py",
           old='return _PATTERNS[1].sub(r"\\1***", text)',
           new="return text",
           tests=("tests/test_secrets.py",), row=4),
    Mutant("loop-stop-signal-not-shared", "one rank's stop signal not shared with the others (_any_rank)",
           "src/tunewright/training/loop.py",
           old='return bool(acc.reduce(torch.tensor([float(flag)], device=acc.device), reduction="sum")[0] > 0)',
           new="return flag",
           tests=("tests/training/test_distributed.py",), row=5),
    Mutant("loop-signal-ignored", "SIGTERM/SIGINT ignored: a signalled run trains on to the end",
           "src/tunewright/training/loop.py",
           old="        self.received = signum",
           new="        pass",
           tests=("tests/reliability/test_kills.py::test_signal_saves_at_the_step_boundary_and_exits_cleanly",),
           row=8),
    Mutant("verify-accumulation-always-passes", "verify's accumulation check always passes",
           "src/tunewright/verify.py",
           old='return Check("accumulation", scale > 0 and diff <= 1e-5 * max(1.0, scale),',
           new='return Check("accumulation", True,',
           tests=("tests/test_verify.py",), row=6),
    Mutant("verify-merge-always-passes", "verify's merge check always passes",
           "src/tunewright/verify.py",
           old='return Check("merge", diff <= 1e-4,',
           new='return Check("merge", True,',
           tests=("tests/test_verify.py",), row=6),
    Mutant("scoring-full-logits", "logits_to_keep dropped in label scoring: full [batch, seq, vocab] logits",
           "src/tunewright/eval/scoring.py",
           old="logits = model(**kwargs, logits_to_keep=keep).logits",
           new="logits = model(**kwargs).logits",
           tests=("tests/eval/test_scoring.py",), row=7),

    # ------------------------------------------------------------ caught by the audit: keep them caught
    Mutant("packing-positions-not-reset", "packed examples' position ids run on instead of restarting at 0",
           "src/tunewright/data/packing.py",
           old="positions[r, at:at + n] = torch.arange(n)",
           new="positions[r, at:at + n] = torch.arange(at, at + n)",
           tests=("tests/data/test_packing.py",)),
    Mutant("packing-label-across-boundary", "label mask off by one: a packed example's first token is trained "
           "as if predicted by the previous example",
           "src/tunewright/data/packing.py",
           old="            labels[r, at] = IGNORE_INDEX  # nothing predicts across the boundary\n",
           new="",
           tests=("tests/data/test_packing.py",)),
    Mutant("eos-never-trained", "the EOS appended to an example gets label -100: nothing learns to stop",
           "src/tunewright/data/tokenize.py",
           old="labels.append(facts.eos_id if trained else IGNORE_INDEX)",
           new="labels.append(IGNORE_INDEX)",
           tests=("tests/data/test_tokenize.py",)),
    Mutant("cache-key-no-template-text", "the template's text left out of the tokenization cache key",
           "src/tunewright/data/cache.py",
           old='        "template": hashlib.sha256(template.encode()).hexdigest(),\n',
           new="",
           tests=("tests/data/test_cache.py",)),
    Mutant("warmup-starts-at-zero", "warmup's first step at lr 0 (s / warm instead of (s + 1) / (warm + 1))",
           "src/tunewright/training/optim.py",
           old="return (s + 1) / (warm + 1)",
           new="return s / warm",
           tests=("tests/training/test_optim.py",)),
    Mutant("loop-normalise-per-micro-batch", "each micro-batch divided by its own target count, not the step's",
           "src/tunewright/training/loop.py",
           old="acc.backward(loss_sum * (world / n_targets))",
           new="acc.backward(loss_sum * (world / parts.objective.count_targets(batch) / len(micro)))",
           tests=("tests/training/test_loop.py",)),
    Mutant("loop-nan-batch-still-steps", "a skipped (NaN) batch still updates the weights",
           "src/tunewright/training/loop.py",
           old="            if not skip_update:\n                opt.step()",
           new="            if True:\n                opt.step()",
           tests=("tests/reliability/test_numerics.py",)),
    Mutant("early-stopping-mode-reversed", "an improvement is judged in the opposite direction of the mode",
           "src/tunewright/training/loop.py",
           old='return value < best - min_delta if mode == "min" else value > best + min_delta',
           new='return value > best + min_delta if mode == "min" else value < best - min_delta',
           tests=("tests/eval/test_during_training.py",)),
    Mutant("checkpoints-ordered-by-name", "checkpoints ordered by folder name: step-10 before step-9",
           "src/tunewright/training/checkpoint.py",
           old="    return sorted(found)",
           new="    return sorted(found, key=lambda found: found[1].name)",
           tests=("tests/training/test_checkpoint.py",)),
    Mutant("retention-deletes-the-best", "save_total_limit may delete the best checkpoint",
           "src/tunewright/training/checkpoint.py",
           old="        keep.add(best_step)",
           new="        pass",
           tests=("tests/reliability/test_retention.py", "tests/training/test_checkpoint.py")),
    Mutant("resume-rng-not-restored", "resume does not restore the RNG (dropout masks differ after a resume)",
           "src/tunewright/training/checkpoint.py",
           old='    set_rng_state(_load_tensors(path / "rng.pt"))',
           new='    _load_tensors(path / "rng.pt")',
           tests=("tests/training/test_loop.py",)),
    Mutant("checkpoint-state-unpickled", "optimizer/scheduler/RNG state read with weights_only=False",
           "src/tunewright/training/checkpoint.py",
           old="return torch.load(file, weights_only=True)",
           new="return torch.load(file, weights_only=False)",
           tests=("tests/reliability/test_security.py",)),
    Mutant("remote-code-trusted-by-default", "model.trust_remote_code on by default",
           "src/tunewright/config.py",
           old="trust_remote_code: bool = Field(False,",
           new="trust_remote_code: bool = Field(True,",
           tests=("tests/reliability/test_security.py",)),
    Mutant("auc-of-the-wrong-label", "binary AUC computed from P(first label) instead of P(positive label)",
           "src/tunewright/eval/scoring.py",
           old="pos = labels.index(positive) if positive is not None else 1",
           new="pos = labels.index(positive) if positive is not None else 0",
           tests=("tests/eval/test_scoring.py",)),
]
