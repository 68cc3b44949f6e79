"""Rewards of the RL objectives (ppo, grpo, rloo): where a score comes from and how it is shaped.

A score per answer is the weighted sum of the config's `rewards` sources, each either

    function: "module:function" | "path/to/file.py:function"   called as function(prompts, answers) -> scores
              (lists of strings in, one number per answer out)
    model:    a run (or its final/) of the classification objective with one output (problem_type
              regression, the reward model of the preference issue), loaded as eval/predict.py's
              `load_classifier` loads it; it reads the policy's prompt and answer as text (decoded with the
              special tokens, re-encoded by its own tokenizer) and is read at the last real token
              (`classification.classifier_logits`, whichever side the batch is padded on)

then shaped, in this order, over the rollout (B answers):

    clip        s <- clamp(s, -reward_clip, reward_clip)                 (trlX's cliprange_reward)
    normalize   s <- (s - mean(s)) / (std(s) + 1e-8)                     (reward_normalize: the rollout's
                                                                          own statistics, nothing kept)
    penalties   s <- s - empty_answer_penalty    for an answer with no token before its end
                s <- s - missing_eos_penalty     for an answer cut by max_new_tokens (TRL's missing_eos_penalty)

`token_rewards` puts each answer's score on its last generated token, the one the value of the
whole answer is decided at: never on a padding position, whether the prompt was padded on the left
or the answers on the right.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import torch
from pydantic import Field, model_validator

from tunewright.errors import ConfigError
from tunewright.sections import Section

__all__ = ["RewardSource", "load_sources", "score", "shape", "token_rewards", "last_token_index"]


class RewardSource(Section):
    function: str | None = Field(None, description=(
        "A Python reward function `module:function` or `file.py:function` (a path from the working directory), "
        "called as function(prompts, answers) -> one score per answer."))
    model: str | None = Field(None, description=(
        "A reward model: a classification run (or its final/) with one output (problem_type regression)."))
    weight: float = Field(1.0, description="Weight of this source in the summed score.")

    @model_validator(mode="after")
    def _one(self):
        if (self.function is None) == (self.model is None):
            raise ValueError("give exactly one of function or model")
        if self.function is not None and ":" not in self.function:
            raise ValueError(f"function: {self.function!r} is not 'module:function'")
        return self


def _import_function(spec: str, field: str) -> Callable:
    from tunewright.plugins import _import_file

    where, _, name = spec.rpartition(":")
    try:
        module = _import_file(Path(where).resolve()) if where.endswith(".py") else importlib.import_module(where)
    except (ImportError, OSError) as err:
        raise ConfigError(f"{field}: cannot import {where!r}: {err}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{field}: {where!r} has no function {name!r}")
    return fn


class _RewardModel:
    """A one-output classification run as a scorer of (prompt, answer) texts."""

    def __init__(self, path: str, field: str, device):
        # load_trained + the head check, as eval/predict.py's load_classifier does (importing that
        # module from an objective would close an import cycle through the config schema)
        from tunewright.models.load import head_of
        from tunewright.models.trained import load_trained
        from tunewright.objectives.classification import HEAD

        self.model, self.tokenizer = load_trained(path)
        if head_of(self.model) != HEAD:
            raise ConfigError(f"{field}: {path} is not a classification head (a reward model is a classification "
                              f"run with one output)")
        if self.model.config.num_labels != 1:
            raise ConfigError(f"{field}: {path} has {self.model.config.num_labels} outputs; a reward model has one "
                              f"(classification with problem_type: regression)")
        self.model.to(device).eval().requires_grad_(False)
        if self.tokenizer.pad_token is None:  # a folder saved without one: any id will do, the mask says what is real
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def __call__(self, texts: list[str]) -> torch.Tensor:
        from tunewright.objectives.classification import classifier_logits

        enc = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        batch = {k: v.to(self.model.device) for k, v in enc.items()}
        with torch.no_grad():
            return classifier_logits(self.model, batch).float()[:, 0].cpu()


def load_sources(cfg, device) -> list[tuple[str, Callable, float]]:
    """(kind, scorer, weight) per source: functions imported, reward models loaded (frozen)."""
    out = []
    for i, src in enumerate(cfg.rewards):
        field = f"objective.rewards.{i}"
        if src.function is not None:
            out.append(("function", _import_function(src.function, f"{field}.function"), src.weight))
        else:
            out.append(("model", _RewardModel(src.model, f"{field}.model", device), src.weight))
    return out


def score(sources, prompts: list[str], answers: list[str], texts: list[str]) -> torch.Tensor:
    """Weighted sum of every source's scores [B] (fp32); `texts` are the whole sequences a reward
    model reads."""
    total = torch.zeros(len(answers), dtype=torch.float32)
    for kind, fn, weight in sources:
        got = fn(texts) if kind == "model" else fn(list(prompts), list(answers))
        got = torch.as_tensor(got, dtype=torch.float32).reshape(-1)
        if got.numel() != len(answers):
            raise ConfigError(f"objective.rewards: a reward function returned {got.numel()} scores for "
                              f"{len(answers)} answers")
        total += weight * got
    return total


def shape(scores: torch.Tensor, cfg, empty: torch.Tensor, missing_eos: torch.Tensor) -> torch.Tensor:
    """Clip, normalize and penalize scores [B] (the module docstring's order); `empty` and
    `missing_eos` are bool [B]."""
    s = scores.float()
    if cfg.reward_clip is not None:
        s = s.clamp(-cfg.reward_clip, cfg.reward_clip)
    if cfg.reward_normalize and s.numel() > 1:
        s = (s - s.mean()) / (s.std() + 1e-8)
    if cfg.empty_answer_penalty is not None:
        s = s - cfg.empty_answer_penalty * empty.float()
    if cfg.missing_eos_penalty is not None:
        s = s - cfg.missing_eos_penalty * missing_eos.float()
    return s


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 of each row of `mask` [B, A] (0 for a row without any)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (positions * mask.long()).argmax(-1)


def token_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, A] zeros with each row's score at its last answer token (mask [B, A]: 1 on answer tokens)."""
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    rows = torch.arange(mask.shape[0], device=mask.device)
    out[rows, last_token_index(mask)] = scores.to(out.device) * (mask.sum(-1) > 0).float()
    return out
