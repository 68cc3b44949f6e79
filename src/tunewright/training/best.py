"""Which step final/ holds: the last one, or with `eval.load_best` the best evaluation's
(transformers' `load_best_model_at_end`).

The best step is the evaluation whose `eval.best_metric` was best (`eval.best_mode`; ties keep the
earlier step). With load_best on, the loop saves a checkpoint at each new best, so the best is on
disk at the end; retention (`output.save_total_limit`) never deletes it. Before final/ is written,
its weights are loaded into the model through the method, the same way a resume loads them.

    final_choice(eval_cfg, step, best_step, best_metric) -> {"step", "best"}   recorded in
                                                            final/tunewright.json and the run report
    load_best_weights(load, ckpt_root, choice)             the best checkpoint's weights, verified
    check_best_kept(eval_cfg, ckpt_root, state)            a resume whose best was never saved is refused
"""

from __future__ import annotations

from pathlib import Path

from tunewright.errors import ConfigError, TunewrightError
from tunewright.training.checkpoint import verify

__all__ = ["final_choice", "describe", "load_best_weights", "check_best_kept"]


def final_choice(eval_cfg, step: int, best_step: int | None, best_metric: float | None) -> dict:
    """{"step": the step final/ holds, "best": {metric, mode, value} when it is the best evaluation's,
    else None (the last step)}. Without any evaluation to choose from, final/ is the last step."""
    if not eval_cfg.load_best or best_step is None:
        return {"step": step, "best": None}
    return {"step": best_step, "best": {"metric": eval_cfg.best_metric, "mode": eval_cfg.best_mode,
                                        "value": best_metric}}


def describe(choice: dict) -> str:
    """`final/ holds step 6 (best eval_loss 1.234)`, or `final/ holds step 8, the last step`."""
    best = choice.get("best")
    if best:
        return f"final/ holds step {choice['step']} (best {best['metric']} {best['value']:.4g})"
    return f"final/ holds step {choice['step']}, the last step"


def _folder(ckpt_root: Path, step: int) -> Path:
    return Path(ckpt_root) / f"step-{step}"


def load_best_weights(load, ckpt_root: Path, choice: dict, last_step: int) -> None:
    """Load the chosen best checkpoint's weights with `load(path)` (the method's load). Nothing to
    do when final/ is the last step, or when the best is the last step (the model holds it)."""
    if choice["best"] is None or choice["step"] == last_step:
        return
    folder = _folder(ckpt_root, choice["step"])
    problem = verify(folder)  # saved by this run; a file changed since is refused, never loaded
    if problem is not None:
        raise TunewrightError(f"eval.load_best: the best checkpoint {folder} cannot be loaded: {problem}; "
                              f"final/ was not written (the last checkpoint is intact)")
    load(folder)


def check_best_kept(eval_cfg, ckpt_root: Path, state: dict) -> None:
    """A resume with eval.load_best whose best step so far has no sound checkpoint (the checkpoint's
    run did not save its bests: eval.load_best and output.save_steps were off) is refused now, not at
    the end, when final/ could not be written."""
    best = state.get("best_step")
    if not eval_cfg.load_best or best is None or best == state.get("step"):
        return
    folder = _folder(ckpt_root, best)
    problem = verify(folder)
    if problem is not None:
        why = "was not saved" if not folder.is_dir() else f"cannot be used ({problem})"
        raise ConfigError(f"eval.load_best: the best step so far, {best}, {why}, so final/ could not hold it; "
                          f"resume with eval.load_best=false, or start a new run with eval.load_best on")
