"""Sequence classification: a head on a language model (or an encoder) reads one vector per text and
scores the classes.

    decoder-only (Llama, Qwen2, GPT-2, SmolLM2)   the head scores every position; we read the last
                                                  real token, found from the attention mask
    encoder (BERT)                                the head reads the pooled [CLS] vector

    single_label   loss_i = w[y_i] * CE(z_i, y_i)                      (softmax over the classes)
    multi_label    loss_i = mean_k w_k * BCE(z_ik, y_ik)               (a sigmoid per class)
    regression     loss_i = (z_i - y_i)^2                              (one output)

The loss is summed over rows and the loop divides by the rows of the whole accumulated batch, so
class weights give sum_i w[y_i] CE_i / N: 4 micro-batches of 2 equal one batch of 8. PyTorch's
`cross_entropy(weight=w)` divides by sum_i w[y_i] instead, which depends on which classes a
micro-batch holds and breaks that equality. `class_weights: auto` is scikit-learn's "balanced":
w_c = N / (K * n_c) over the training rows (a class twice as rare weighs twice as much).

Rows come from the `classification` and `tabular` formats (a user turn: the text, its pair in the
turn's context; the reply: the label). Class names, in id order, are `labels` or the sorted names
found in the training rows; they reach the model's config (num_labels, id2label, label2id), so plain
transformers reads them from config.json. A decoder's pad token is often its EOS (SmolLM2's is);
transformers pools the rightmost token that is not the pad id, which would skip a text's own final
EOS, so head models get a dedicated pad token (`prepare_tokenizer`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from tunewright.data.types import Encoded
from tunewright.errors import DataError
from tunewright.models.load import base_model
from tunewright.sections import Section

__all__ = ["Config", "HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "METRICS", "OUTPUTS", "misfit", "encode",
           "collate", "count", "end_ids", "render", "prepare_tokenizer", "fit_data", "model_config", "loss",
           "eval_metrics", "classifier_logits", "row_losses", "PROBLEM_TYPES", "PAD_TOKEN"]

HEAD = "sequence_classification"
FORMATS = ("classification", "tabular")
TEMPLATED = False  # the head reads the text as the tokenizer encodes it, no chat template
PACKABLE = False  # one text per row: the head reads one position of it
UNIT = "rows"
METRICS: dict[str, str] = {}  # accuracy, macro F1 and AUC need every evaluation row: OUTPUTS + eval_metrics
OUTPUTS = ("logits", "targets")

# our problem types -> transformers' config.problem_type
PROBLEM_TYPES = {"single_label": "single_label_classification", "multi_label": "multi_label_classification",
                 "regression": "regression"}
PAD_TOKEN = "<|pad|>"


class Config(Section):
    name: Literal["classification"] = Field("classification", description=(
        "A classification head (sequence classification): cross-entropy over classes, or regression."))
    problem_type: Literal["single_label", "multi_label", "regression"] = Field("single_label", description=(
        "single_label: one class per row (softmax); multi_label: a list of classes per row (a sigmoid each); "
        "regression: a number per row (one output, squared error)."))
    labels: list[str] | None = Field(None, description=(
        "Class names in id order; default: the sorted names found in the training rows (so [No, Yes], "
        "[negative, positive]: the second is the positive class of AUC)."))
    class_weights: Literal["auto"] | list[float] | None = Field(None, description=(
        "Weight of each class in the loss (in `labels` order), or `auto`: N / (K * rows of the class) over the "
        "training rows. The weighted loss is summed over rows and divided by the row count."))

    @model_validator(mode="after")
    def _fits_problem(self):
        if self.problem_type == "regression" and (self.labels or self.class_weights):
            raise ValueError("objective.labels and objective.class_weights do not apply to problem_type: regression")
        if self.labels is not None:
            if len(self.labels) < (1 if self.problem_type == "multi_label" else 2):
                raise ValueError(f"objective.labels: needs at least two classes, got {self.labels}")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError(f"objective.labels: a class is listed twice: {self.labels}")
        weights = self.class_weights
        if isinstance(weights, list):
            if any(w <= 0 for w in weights):
                raise ValueError(f"objective.class_weights: every weight must be above 0, got {weights}")
            if self.labels is not None and len(weights) != len(self.labels):
                raise ValueError(f"objective.class_weights: {len(weights)} weights for {len(self.labels)} labels")
        return self


def misfit(run_cfg) -> str | None:
    """The head reads the plain text: no chat template, no system prompt, no generation metrics."""
    for key in ("template", "system_prompt", "train_on_inputs"):
        if getattr(run_cfg.data, key):
            return f"data.{key}: not used by objective 'classification' (the head reads the plain text); remove it"
    if run_cfg.eval.metrics or run_cfg.eval.labels:
        key = "metrics" if run_cfg.eval.metrics else "labels"
        return (f"eval.{key}: the classification objective reports eval_accuracy, eval_macro_f1 and eval_auc "
                f"from its head at each evaluation; remove eval.{key}")
    return None


# ---------------------------------------------------------------- rows

def _text_and_label(example) -> tuple[str, str | None, str]:
    """(text, second text, label) of a classification or tabular row (a conversation: the user turns,
    the context of the last one, and the last reply)."""
    if example.messages is None:
        raise DataError(example.source, example.line, None, "a classification row needs a text and a label")
    last = max((i for i, m in enumerate(example.messages) if m.role == "assistant"), default=None)
    users = [m for m in example.messages[:last] if m.role == "user"] if last is not None else []
    if not users:
        raise DataError(example.source, example.line, None, "a classification row needs a text and a label")
    return "\n\n".join(m.content for m in users), users[-1].context, example.messages[last].content


def encode(example, tokenizer, template: str, data_cfg):
    """The text (and its pair) as the tokenizer encodes it with its own special tokens; no EOS is
    appended. The label stays a name in `meta` (ids are given once every row is read: `fit_data`)."""
    text, pair, label = _text_and_label(example)
    if pair is not None and tokenizer.sep_token is None:  # no pair convention (GPT-2, SmolLM2): one text
        text, pair = f"{text}\n\n{pair}", None
    encoded = tokenizer(text, pair, add_special_tokens=True)
    meta: dict = {"label": label}
    if len(encoded["input_ids"]) > data_cfg.cutoff_len:
        if data_cfg.truncation == "drop":
            return "too_long"
        encoded = tokenizer(text, pair, add_special_tokens=True, truncation="longest_first",
                            max_length=data_cfg.cutoff_len)
        meta["truncated"] = True
    types = encoded.get("token_type_ids")
    if types and 1 in types:  # BERT pairs: segment B starts here (collate rebuilds token_type_ids)
        meta["pair_start"] = types.index(1)
    return Encoded(list(encoded["input_ids"]), [], example.source, example.line, meta)


def collate(rows: list, pad_id: int, packed: bool) -> dict:
    """input_ids and attention_mask [B, T] padded on the right, token_type_ids [B, T] when a row is a
    BERT pair, and the rows' label names (strings: `loss` maps them with the resolved labels)."""
    examples = [r[0] for r in rows]
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    types = torch.zeros((len(examples), width), dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e.input_ids)
        ids[r, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[r, :n] = 1
        if "pair_start" in e.meta:
            types[r, e.meta["pair_start"]:n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "label_names": [e.meta["label"] for e in examples],
             "num_tokens": int(mask.sum())}
    if any("pair_start" in e.meta for e in examples):
        batch["token_type_ids"] = types
    return batch


def count(batch: dict) -> int:
    return len(batch["label_names"])


def end_ids(tokenizer, template: str) -> list[int]:
    return []  # a head model does not generate


def render(encoded, tokenizer) -> str:
    return f"{tokenizer.decode(encoded.input_ids, skip_special_tokens=False)}  -> label: {encoded.meta['label']}"


# ---------------------------------------------------------------- before the model loads

def prepare_tokenizer(tokenizer) -> list[int]:
    """A dedicated pad token when the pad is EOS or missing (ids of tokens added: the embeddings grow)."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return []
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return [tokenizer.pad_token_id]


def fit_data(cfg: Config, data) -> Config:
    """`cfg` with the class names (and `auto` class weights) taken from the training rows; every
    evaluation row's label must be one of them (DataError naming its file and line)."""
    if cfg.problem_type == "regression":
        for e in [*data.train, *data.eval]:
            _number(e)
        return cfg
    found = [_names(e, cfg) for e in data.train]
    labels = cfg.labels or sorted({n for names in found for n in names})
    known = set(labels)
    for e in [*data.train, *data.eval]:
        unknown = [n for n in _names(e, cfg) if n not in known]
        if unknown:
            raise DataError(e.source, e.line, "label", f"{unknown[0]!r} is not one of the classes {labels}"
                            + ("" if cfg.labels is None else " (objective.labels)"))
    if len(labels) < 2 and cfg.problem_type == "single_label":
        raise DataError(", ".join(dict.fromkeys(e.source for e in data.train)), None, "label",
                        f"the training rows hold one class only ({labels}); a classifier needs two or more")
    weights = cfg.class_weights
    if weights == "auto":
        rows = {name: sum(name in names for names in found) for name in labels}
        empty = [name for name, n in rows.items() if n == 0]
        if empty:
            raise DataError(", ".join(dict.fromkeys(e.source for e in data.train)), None, "label",
                            f"class {empty[0]!r} has no training rows; class_weights: auto cannot weigh it")
        weights = [len(found) / (len(labels) * rows[name]) for name in labels]
    elif isinstance(weights, list) and len(weights) != len(labels):
        raise DataError(", ".join(dict.fromkeys(e.source for e in data.train)), None, "label",
                        f"objective.class_weights has {len(weights)} weights for {len(labels)} classes {labels}")
    return cfg.model_copy(update={"labels": labels, "class_weights": weights})


def _names(e: Encoded, cfg: Config) -> list[str]:
    label = e.meta["label"]
    return [n.strip() for n in label.split(",")] if cfg.problem_type == "multi_label" else [label]


def _number(e: Encoded) -> float:
    try:
        return float(e.meta["label"])
    except ValueError:
        raise DataError(e.source, e.line, "label", f"{e.meta['label']!r} is not a number "
                                                   "(problem_type: regression)") from None


def model_config(cfg: Config, tokenizer) -> dict:
    """What the model's config must say before the head is built: its size, class names, problem
    type and the pad id (transformers' pooling reads it)."""
    settings = {"problem_type": PROBLEM_TYPES[cfg.problem_type], "pad_token_id": tokenizer.pad_token_id}
    if cfg.problem_type == "regression":
        return {"num_labels": 1, **settings}
    return {"id2label": dict(enumerate(cfg.labels)), "label2id": {n: i for i, n in enumerate(cfg.labels)},
            **settings}


# ---------------------------------------------------------------- forward and loss

def classifier_logits(model, batch: dict) -> torch.Tensor:
    """[B, num_labels] logits of each row's text.

    A decoder-only classifier's head (`score`, as transformers names it) scores every position
    [B, T, K]; we catch that with a hook and read each row's last real token, from the attention
    mask (the rightmost 1), instead of trusting the pad-id search transformers pools with. An
    encoder's head reads its pooled [CLS] vector: its own logits are already [B, K]. Rows may be
    padded on the right (training) or the left (a batch of generated answers, as a PPO step scores them).
    """
    head = getattr(base_model(model), "score", None)
    caught: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda module, args, out: caught.append(out)) if head is not None else None
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    mask = batch["attention_mask"]
    if bool((mask[:, 0] == 0).any()):  # left padding (generated answers): positions count real tokens only,
        inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # so a row scores as it does alone
    try:
        out = model(**inputs, use_cache=False) if head is not None else model(**inputs)
    finally:
        if handle is not None:
            handle.remove()
    if caught and caught[-1].dim() == 3:
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (positions * mask).argmax(-1)  # [B]: the rightmost real token, whichever side was padded
        return caught[-1][torch.arange(mask.shape[0], device=mask.device), last]
    return out.logits


def targets_of(batch: dict, cfg: Config, device) -> torch.Tensor:
    """The rows' targets: class ids [B] (long), multi-hot [B, K] or values [B] (float)."""
    names = batch["label_names"]
    if cfg.problem_type == "regression":
        return torch.tensor([float(n) for n in names], device=device)
    index = {n: i for i, n in enumerate(cfg.labels)}
    if cfg.problem_type == "single_label":
        return torch.tensor([index[n] for n in names], device=device)
    hot = torch.zeros(len(names), len(cfg.labels), device=device)
    for r, label in enumerate(names):
        hot[r, [index[n.strip()] for n in label.split(",")]] = 1.0
    return hot


def row_losses(logits: torch.Tensor, targets: torch.Tensor, cfg: Config) -> torch.Tensor:
    """[B] per-row losses (the module docstring's formulas), fp32."""
    logits = logits.float()
    weights = torch.tensor(cfg.class_weights, device=logits.device) if isinstance(cfg.class_weights, list) else None
    if cfg.problem_type == "single_label":
        ce = F.cross_entropy(logits, targets, reduction="none")
        return ce * weights[targets] if weights is not None else ce
    if cfg.problem_type == "multi_label":
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # [B, K]
        return (bce * weights if weights is not None else bce).mean(-1)
    return (logits.squeeze(-1) - targets) ** 2


def loss(model, batch: dict, cfg: Config, state=None) -> tuple[torch.Tensor, dict]:
    """Summed row loss (0-dim), and the rows' logits and targets for the evaluation metrics."""
    logits = classifier_logits(model, batch)
    targets = targets_of(batch, cfg, logits.device)
    return row_losses(logits, targets, cfg).sum(), {"logits": logits.detach().float(), "targets": targets}


def eval_metrics(outputs: dict, cfg: Config) -> dict:
    """Metrics over every evaluation row (logits [N, K], targets): single_label accuracy, macro F1
    and ROC AUC as label scoring computes them (eval/labels.py); multi_label subset accuracy, macro F1,
    macro AUC; regression mse and mae."""
    from tunewright.eval.labels import label_metrics, multi_label_metrics

    logits, targets = outputs["logits"], outputs["targets"]
    if cfg.problem_type == "regression":
        error = logits.squeeze(-1).double() - targets.double()
        return {"mse": float((error ** 2).mean()), "mae": float(error.abs().mean())}
    if cfg.problem_type == "multi_label":
        return multi_label_metrics(torch.sigmoid(logits), targets)
    return label_metrics(torch.softmax(logits, dim=-1), targets.tolist())
