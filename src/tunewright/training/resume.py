"""Resuming a run: which checkpoint, whether the config still fits it, and restoring its state.

A checkpoint's state means something only together with the settings it was written with, so a
resume either honours a change or refuses it, naming the key:

  honoured   train.max_steps / train.num_epochs: the schedule is recomputed for the new total and
             the steps from the checkpoint on follow it (with linear or cosine decay the lr at the
             resumed step is the new schedule's, which is higher when the total grew);
             train.learning_rate: the new peak applies from the resumed step, on the same schedule;
             train.logging_steps, report_to, nan_policy, max_nan_skips; every `eval` key (turning
             eval.load_best on needs the best step so far on disk: training/best.py);
             output.save_steps and save_total_limit; data.eval_datasets; the speed switches of
             `model` (gradient checkpointing, compile, attention kernel, liger, offloading)
  refused    everything else: model name/revision/dtype/quantization, train.optimizer, method, objective, regularizers, data settings
             and the training rows' content, batch layout, seed, process count, optimizer and schedule shape

Each honoured change is printed when the run resumes, and config.yaml records the values in use.
A checkpoint of another run is refused (start from its weights with `method.init_from`), and a
checkpoint whose files fail their manifest is skipped by `resume: auto` (the previous one is used)
and refused when named explicitly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tunewright.disk import write_text_atomic
from tunewright.errors import ConfigError
from tunewright.secrets import redact, redact_tree
from tunewright.training.checkpoint import (COMPLETE, complete_checkpoints, load_training_state, read_trainer_state,
                                            verify)
from tunewright.training.logging import read_metrics

__all__ = ["resolve_resume", "trained_precision", "resume_key", "checkpoint_record", "data_digest", "check_resume_key", "restore",
           "resume", "forget_after"]

# train keys a checkpoint's optimizer and schedule depend on, beside the batch layout and seed (the
# data position); the other train keys may change on resume
FIXED_TRAIN = ("lr_scheduler", "min_lr_ratio", "warmup_steps", "warmup_ratio", "weight_decay", "adam_beta1",
               "adam_beta2", "adam_epsilon", "max_grad_norm", "mixed_precision", "optimizer")
# data keys that shape evaluation only, or where the cache lives
FREE_DATA = ("eval_datasets", "cache_dir")
# values older checkpoints recorded under a name since renamed: the same setting, not a change
RENAMED = {"train.mixed_precision": {"no": "fp32"}}


def resolve_resume(cfg, run_dir: Path, say) -> Path | None:
    """The checkpoint to resume from, verified: `auto` = the newest sound one of this run (None when
    there is none), or the named path, which must be this run's and sound."""
    if not cfg.train.resume:
        return None
    ckpt_root = Path(run_dir) / "checkpoints"
    if cfg.train.resume == "auto":
        for step, folder in reversed(complete_checkpoints(ckpt_root)):
            problem = verify(folder)
            if problem is None:
                return folder
            say(f"train.resume: skipping {folder}: {problem}; trying the previous checkpoint")
        return None
    path = Path(cfg.train.resume)
    if not path.is_dir():
        raise ConfigError(f"train.resume: {path}: no such checkpoint folder")
    if path.resolve().parent != ckpt_root.resolve():
        raise ConfigError(f"train.resume: {path} is not a checkpoint of this run ({run_dir}); to continue that "
                          f"run, set output.dir/output.name to its folder; to start a new run from its weights, "
                          f"use method.init_from={path} (LoRA) instead of train.resume")
    problem = verify(path)
    if problem is not None:
        raise ConfigError(f"train.resume: {path}: {problem}")
    return path


def trained_precision(cfg, run_dir: Path) -> str | None:
    """The precision the checkpoint `train.resume` names was trained in (None when not resuming or
    nothing is found): read before the run starts, so `mixed_precision: auto` keeps it. The
    checkpoint is verified later; a damaged newest one falls back to an earlier one of the same run."""
    if not cfg.train.resume:
        return None
    if cfg.train.resume == "auto":
        found = complete_checkpoints(Path(run_dir) / "checkpoints")
        if not found:
            return None
        folder = found[-1][1]
    else:
        folder = Path(cfg.train.resume)
    try:
        value = read_trainer_state(folder)["resume_key"]["train"]["mixed_precision"]
    except (ConfigError, TypeError, KeyError):  # no checkpoint, or not ours: resolve_resume says why
        return None
    return RENAMED["train.mixed_precision"].get(value, value)


def data_digest(encoded_rows) -> str:
    """sha256 of the training rows' tokens and labels: a data file edited since the checkpoint
    changes it even when every setting is the same."""
    import numpy as np

    h = hashlib.sha256()
    for row in encoded_rows:
        for seq in (row.input_ids, row.labels):
            h.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()


def resume_key(cfg, world: int, digest: str) -> dict:
    """What a checkpoint's state means only together with (stored in every checkpoint, so without
    credentials)."""
    dump = redact_tree(cfg.model_dump(mode="json"))
    return {"model": {k: dump["model"][k] for k in ("name", "revision", "dtype", "load_in_4bit", "load_in_8bit",
                                                    "quantization")}, "method": dump["method"],
            "objective": dump["objective"], "data": {k: v for k, v in dump["data"].items() if k not in FREE_DATA},
            "world": world, "batch": {k: dump["train"][k] for k in ("batch_size", "micro_batch_size", "seed")},
            "train": {k: dump["train"][k] for k in FIXED_TRAIN}, "data_content": digest,
            "regularizers": dump["regularizers"]}


def checkpoint_record(cfg, world: int, digest: str, total_steps: int) -> dict:
    """What every checkpoint's trainer_state carries for a later resume: the resume key, and the
    honoured-on-resume settings as they were (so a resume can say what it changed)."""
    return {"resume_key": resume_key(cfg, world, digest),
            "schedule": {"learning_rate": cfg.train.learning_rate, "total_steps": total_steps}}


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):  # data.datasets
        out = {prefix[:-1]: f"{len(tree)} entries"}
        for i, v in enumerate(tree):
            out.update(_flat(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: tree}


def _key_name(flat_key: str) -> str:
    """Flattened resume-key path -> the config key a user writes."""
    if flat_key == "data_content":
        return "data (the training rows' content changed: a data file was edited)"
    if flat_key == "world":
        return "the number of processes"
    for prefix in ("batch.", "train."):
        if flat_key.startswith(prefix):
            return "train." + flat_key[len(prefix):]
    return flat_key


def check_resume_key(saved: dict | None, now: dict, path: Path) -> None:
    """Refuse a resume whose fixed settings differ from the checkpoint's, naming each key. Keys only
    one side has (a checkpoint from an older version) are not compared."""
    if saved is None:
        return
    old, new = _flat(saved), _flat(now)
    old = {k: RENAMED.get(k, {}).get(v, v) if isinstance(v, str) else v for k, v in old.items()}
    changed = [k for k in sorted(set(old) & set(new)) if old[k] != new[k]]
    if not changed:
        return
    shown = [_key_name(k) if k == "data_content" else f"{_key_name(k)} ({_short(old[k])} -> {_short(new[k])})"
             for k in changed[:4]]
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    raise ConfigError(f"train.resume: {path} was written with different settings: {'; '.join(shown)}{more}; "
                      f"resume with the original values, or start a new run (method.init_from for an adapter)")


def _short(value) -> str:
    text = redact(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def restore(path: Path, cfg, load_weights, optimizer, scheduler, total_steps: int, say) -> dict:
    """Load the checkpoint's weights (through the method), optimizer, scheduler and RNG, apply the
    honoured changes (learning rate, total steps), and return its trainer state."""
    from tunewright.training.optim import lr_lambda

    try:
        load_weights(path)
    except (KeyError, ValueError, RuntimeError) as err:
        raise ConfigError(f"train.resume: {path} does not fit this model and method: "
                          f"{str(err).splitlines()[0][:200]}") from None
    state = load_training_state(path, optimizer, scheduler)
    step = state["step"]
    # equal: the checkpoint holds the last step (final/ was not written: a kill or a full disk after
    # it); the loop trains nothing and the run writes final/ from it, as the save error advises
    if total_steps < step:
        raise ConfigError(f"train.max_steps: the run would end at step {total_steps}, but {path} is at step {step}; "
                          f"raise train.max_steps (or num_epochs) to continue it")
    before = state.get("schedule") or {}
    # the new peak and schedule from this step on; unchanged settings give back exactly the lr the
    # scheduler had computed (base lr x the same factor), so an unchanged resume stays bit-exact
    ratio = cfg.train.learning_rate / scheduler.base_lrs[0]
    scheduler.base_lrs = [base * ratio for base in scheduler.base_lrs]
    factor = lr_lambda(cfg.train, total_steps)(step)
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["initial_lr"], group["lr"] = base, base * factor
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    if before.get("learning_rate") not in (None, cfg.train.learning_rate):
        say(f"train.learning_rate: {cfg.train.learning_rate:g} from step {step} on (the checkpoint's run used "
            f"{before['learning_rate']:g})")
    if before.get("total_steps") not in (None, total_steps):
        say(f"train.max_steps: {total_steps} steps in all (the checkpoint's run planned {before['total_steps']}); "
            f"the {cfg.train.lr_scheduler} schedule is recomputed for {total_steps} steps and followed from step "
            f"{step} (lr now {optimizer.param_groups[0]['lr']:.3g})")
    return state


def resume(path: Path, record: dict, cfg, load_weights, optimizer, scheduler, total_steps: int, say) -> dict:
    """Refuse a changed config (against `record`, this run's `checkpoint_record`), then restore the
    checkpoint at `path`; returns its trainer state."""
    check_resume_key(read_trainer_state(path).get("resume_key"), record["resume_key"], path)
    state = restore(path, cfg, load_weights, optimizer, scheduler, total_steps, say)
    say(f"resumed from {path} at step {state['step']}")
    return state


def forget_after(run_dir: Path, step: int, say) -> None:
    """Resuming from step N abandons what the interrupted run wrote after N: its later checkpoints
    (else `resume: auto` or retention would take them for this run's) and its log lines; a torn last
    log line (a crash mid-write) goes too. All of it is this run's own; each removal is said."""
    later = [(s, folder) for s, folder in complete_checkpoints(Path(run_dir) / "checkpoints") if s > step]
    for _, folder in later:
        (folder / COMPLETE).unlink()  # unmark first: a crash mid-delete leaves an ignored folder
        shutil.rmtree(folder)
    if later:
        say(f"train.resume: removed this run's checkpoints after step {step} "
            f"({', '.join(f.name for _, f in later)}): the resumed run replaces them")
    torn: list = []
    rows = read_metrics(run_dir, torn)
    kept = [m for m in rows if m["step"] <= step]
    if torn:
        say(f"{Path(run_dir) / 'metrics.jsonl'}: dropped a torn last line (written when the run was cut off)")
    if torn or len(kept) < len(rows):
        write_text_atomic(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in kept))
