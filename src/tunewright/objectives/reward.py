"""A reward model: the sequence-classification head (classification.py) with one output, trained on
(prompt, chosen, rejected) pairs to score the chosen answer above the rejected one.

Per pair, with r(x, y) the head's output at the last real token of prompt + answer (found from
the attention mask, so padding on either side cannot move it) and m the row's `margin` column
(0 where absent):

    loss = -log σ(r(x, y_c) - r(x, y_r) - m)          (Bradley-Terry; Ouyang et al. 2022, eq. 1;
                                                         the margin as in Llama 2, Touvron et al. 2023)

summed over pairs: the loop divides by the pairs of the whole accumulated batch, so micro-batching
does not change it. Logged per step and at evaluation (eval_accuracy: the held-out pairs whose
chosen answer scores higher): rewards/chosen, rewards/rejected, margins, accuracy.

The answers are encoded as the dpo objective encodes them (pairs.py: the chat template's prompt,
then the answer and its end of turn), so a reward run's rows are a DPO run's rows. The saved model
is a plain one-output regression head (config.json: num_labels 1, problem_type regression, a
dedicated pad token), which `tunewright predict` and `load_classifier` read like any classifier;
`predict` scores each response of a row as training encoded it (`predict_examples`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from tunewright.data.types import Example
from tunewright.errors import ConfigError
from tunewright.objectives import classification, pairs
from tunewright.sections import Section

__all__ = ["Config", "HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "METRICS", "misfit", "encode", "collate",
           "count", "end_ids", "render", "prepare_tokenizer", "model_config", "loss", "pair_losses", "scores",
           "predict_examples"]

HEAD = classification.HEAD
FORMATS = ("preference", "ranked")
TEMPLATED = True  # the head scores the conversation as the policy it will judge sees it
PACKABLE = False  # the head reads one position of each sequence
UNIT = "pairs"
METRICS = {"rewards/chosen": "mean", "rewards/rejected": "mean", "margins": "mean", "accuracy": "mean"}


class Config(Section):
    name: Literal["reward"] = Field("reward", description=(
        "A reward model: a one-output head trained on preference pairs with -log sigmoid(r_chosen - r_rejected "
        "- margin) (margin: the data's optional `margin` column)."))


def misfit(run_cfg) -> str | None:
    return pairs.misfit(run_cfg, "reward")


def encode(example, tokenizer, template: str, data_cfg):
    """A pair -> Encoded (prompt + chosen; the rejected answer in meta), or a drop reason (pairs.py)."""
    return pairs.encode_answers(example, tokenizer, template, data_cfg)


def collate(rows: list, pad_id: int, packed: bool) -> dict:
    """B pairs -> input_ids/attention_mask [2B, T] (rows 0..B-1 chosen, B..2B-1 rejected, padded on
    the right) and `margin` [B] (0 where the row has none)."""
    encoded = [r[0] for r in rows]
    batch = pairs.collate_rows(encoded + [pairs.second(e) for e in encoded], pad_id)
    batch["margin"] = torch.tensor([float(e.meta.get("margin", 0.0)) for e in encoded])
    return batch


def count(batch: dict) -> int:
    return int(batch["margin"].shape[0])


def end_ids(tokenizer, template: str) -> list[int]:
    return []  # a head model does not generate


render = pairs.render
prepare_tokenizer = classification.prepare_tokenizer  # a dedicated pad token: plain transformers pools right


def model_config(cfg: Config, tokenizer) -> dict:
    """One output, problem_type regression: a score, as a regression classifier saves it."""
    return classification.model_config(classification.Config(problem_type="regression"), tokenizer)


def scores(model, batch: dict) -> torch.Tensor:
    """[R] fp32 score of each row, read at its last real token (classifier_logits)."""
    return classification.classifier_logits(model, batch).squeeze(-1).float()


def pair_losses(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """[B] -log σ(r_c - r_r - m) (the module docstring's formula)."""
    return -F.logsigmoid(chosen - rejected - margin)


def loss(model, batch: dict, cfg: Config, state=None) -> tuple[torch.Tensor, dict]:
    """Summed pair loss (0-dim) and the summed reward metrics."""
    r = scores(model, batch)
    b = r.shape[0] // 2
    r_c, r_r = r[:b], r[b:]
    losses = pair_losses(r_c, r_r, batch["margin"].to(r.device))
    r_c, r_r = r_c.detach(), r_r.detach()
    return losses.sum(), {"rewards/chosen": r_c.sum(), "rewards/rejected": r_r.sum(), "margins": (r_c - r_r).sum(),
                          "accuracy": (r_c > r_r).float().sum()}


# ---------------------------------------------------------------- tunewright predict

def predict_examples(model, tokenizer, examples: list[Example], template: str, data_cfg,
                     batch_size: int = 8) -> list[dict]:
    """A score per response of each row, encoded as training encodes it (`encode`, the run's data
    settings): {"line", "chosen", "rejected"} for a pair, {"line", "score"} for an unpaired row."""
    sequences = []
    for ex in examples:
        encoded = pairs.encode_answers(ex, tokenizer, template, data_cfg)
        if isinstance(encoded, str):  # dropped by the run's own rules: said, not skipped silently
            raise ConfigError(f"{ex.source}:{ex.line}: the row is dropped by the run's data settings "
                              f"({encoded.replace('_', ' ')})")
        sequences += [encoded] + ([pairs.second(encoded)] if "rejected" in encoded.meta else [])
    found: list[float] = []
    for start in range(0, len(sequences), batch_size):
        batch = pairs.collate_rows(sequences[start:start + batch_size], tokenizer.pad_token_id)
        with torch.no_grad():
            found += scores(model, batch).tolist()
    out, k = [], 0
    for ex in examples:
        if len(ex.responses) == 2:
            out.append({"line": ex.line, "chosen": found[k], "rejected": found[k + 1]})
        else:
            out.append({"line": ex.line, "score": found[k]})
        k += len(ex.responses)
    return out
