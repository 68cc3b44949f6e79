"""Metrics, per example and per corpus, from well-kept libraries, keyed by the names users write.

    METRICS.get("rouge")(predictions, references) -> MetricResult(corpus, per_example, settings)
    compute("rouge,bleu", predictions, references) -> {"corpus", "per_example", "settings"}

Text metrics (references: one string per example, or a list of strings for several references):
- ROUGE-1/2/L/Lsum (Lin 2004), Google's `rouge-score`: n-gram / longest-common-subsequence
  overlap, F1 = 2PR / (P + R); corpus = mean over examples; several references: the best F1.
- BLEU (Papineni et al. 2002), `sacrebleu` (Post 2018): corpus BLEU with sacrebleu's defaults;
  sentence BLEU with its default exponential smoothing (Chen & Cherry 2014). 0-100 scale.
- chrF (Popović 2015), `sacrebleu`: character n-gram F-score, beta 2. 0-100 scale.
- exact match and token F1 as in SQuAD (Rajpurkar et al. 2016): lowercase, drop punctuation and
  the articles a/an/the, collapse whitespace; token F1 over the bag of normalized words.
Label metrics, `scikit-learn`: accuracy, macro F1 (unweighted mean of per-class F1), ROC AUC
(binary, or one-vs-rest averaged over classes for several). Perplexity = exp(loss_sum / tokens).
"""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

from tunewright.registry import Registry

__all__ = ["MetricResult", "METRICS", "compute", "metric_options", "perplexity", "normalize_answer",
           "exact_match", "rouge_l", "corpus_scores"]


@dataclass
class MetricResult:
    """One metric's numbers: corpus scores, per-example scores (aligned with the inputs) and a
    sentence that says how they were computed, so users can compare them with published ones."""

    corpus: dict[str, float]
    per_example: dict[str, list[float]] = field(default_factory=dict)
    settings: str = ""


Metric = Callable[..., MetricResult]
METRICS: Registry[Metric] = Registry("metric")


# ------------------------------------------------------------------ inputs

def _check(predictions: Sequence, references: Sequence) -> int:
    if len(predictions) != len(references) or not len(predictions):
        raise ValueError(f"need equally long, non-empty lists (got {len(predictions)} and {len(references)})")
    return len(predictions)


def _reference_lists(references: Sequence) -> list[list[str]]:
    """Each example's references as a non-empty list of strings (one string means one reference)."""
    out = [[r] if isinstance(r, str) else list(r) for r in references]
    for i, refs in enumerate(out):
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"reference {i} must be a string or a non-empty list of strings, got {references[i]!r}")
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


# ------------------------------------------------------------------ ROUGE

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def _rouge(types: tuple[str, ...]) -> Metric:
    def rouge(predictions, references, *, use_stemmer: bool = False, precision_recall: bool = False) -> MetricResult:
        """ROUGE F1 per example and its mean; `precision_recall` adds `<type>_precision/_recall`.
        rougeLsum splits sentences on newlines (rouge-score's convention)."""
        from rouge_score import rouge_scorer

        _check(predictions, references)
        scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
        parts = {"": "fmeasure", **({"_precision": "precision", "_recall": "recall"} if precision_recall else {})}
        per: dict[str, list[float]] = {t + suffix: [] for t in types for suffix in parts}
        for pred, refs in zip(predictions, _reference_lists(references)):
            # score_multi keeps, per type, the reference with the best F1
            scores = scorer.score_multi(refs, pred) if len(refs) > 1 else scorer.score(refs[0], pred)
            for t in types:
                for suffix, attr in parts.items():
                    per[t + suffix].append(float(getattr(scores[t], attr)))
        settings = (f"{', '.join(types)}: rouge-score F1{' (+ precision, recall)' if precision_recall else ''}, "
                    f"default tokenizer, stemming {'on' if use_stemmer else 'off'}, rougeLsum splits on newlines; "
                    f"corpus = mean over examples; best reference per example; 0-1 scale")
        return MetricResult({k: _mean(v) for k, v in per.items()}, per, settings)
    return rouge


# ------------------------------------------------------------------ BLEU and chrF (sacrebleu)

def _streams(references: Sequence) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference position; None where an example has fewer."""
    refs = _reference_lists(references)
    width = max(map(len, refs))
    return [[r[k] if k < len(r) else None for r in refs] for k in range(width)]


def _bleu(predictions, references, *, tokenize: str = "13a", lowercase: bool = False, smooth_method: str = "exp",
          smooth_value: float | None = None) -> MetricResult:
    """Corpus BLEU (sacrebleu's defaults unless told: tokenizer 13a, exp smoothing); per example,
    sentence BLEU with the same settings and effective order."""
    from sacrebleu.metrics import BLEU

    _check(predictions, references)
    how = dict(tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method, smooth_value=smooth_value)
    corpus = BLEU(**how)
    score = corpus.corpus_score(list(predictions), _streams(references)).score
    sentence = BLEU(**how, effective_order=True)
    per = [sentence.sentence_score(p, r).score for p, r in zip(predictions, _reference_lists(references))]
    settings = (f"corpus BLEU, sacrebleu ({corpus.get_signature()}); per example: sentence BLEU with the same "
                f"tokenizer and smoothing, effective order; 0-100 scale")
    return MetricResult({"bleu": score}, {"bleu": per}, settings)


def _sentence_bleu(predictions, references, *, smooth_method: str = "exp", smooth_value: float | None = None,
                   tokenize: str = "13a", lowercase: bool = False) -> MetricResult:
    """Sentence BLEU per example (sacrebleu.sentence_bleu's defaults: exp smoothing, effective
    order) and its mean. `smooth_method="none"` gives 0 to any sentence missing a 4-gram match."""
    from sacrebleu.metrics import BLEU

    _check(predictions, references)
    bleu = BLEU(tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method,
                smooth_value=smooth_value, effective_order=True)
    per = [bleu.sentence_score(p, r).score for p, r in zip(predictions, _reference_lists(references))]
    settings = (f"sentence BLEU, sacrebleu {_version()} (tok:{tokenize}, smooth:{smooth_method}, effective order"
                f"{', lowercase' if lowercase else ''}); corpus = mean over sentences; 0-100 scale")
    return MetricResult({"sentence_bleu": _mean(per)}, {"sentence_bleu": per}, settings)


def _chrf(predictions, references, *, word_order: int = 0) -> MetricResult:
    """Corpus chrF (word_order=2 gives chrF++) and sentence chrF per example."""
    from sacrebleu.metrics import CHRF

    _check(predictions, references)
    chrf = CHRF(word_order=word_order)
    score = chrf.corpus_score(list(predictions), _streams(references)).score
    per = [chrf.sentence_score(p, r).score for p, r in zip(predictions, _reference_lists(references))]
    settings = f"corpus chrF, sacrebleu ({chrf.get_signature()}); per example: sentence chrF; 0-100 scale"
    return MetricResult({"chrf": score}, {"chrf": per}, settings)


def _version() -> str:
    import sacrebleu

    return sacrebleu.__version__


# ------------------------------------------------------------------ SQuAD-style exact match, token F1

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalization: lowercase, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def _token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:  # SQuAD: two empty answers agree, one empty answer scores 0
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _exact_match(predictions, references, *, normalize: bool = True) -> MetricResult:
    _check(predictions, references)
    same = (lambda p, r: float(normalize_answer(p) == normalize_answer(r))) if normalize else exact_match
    per = [max(same(p, r) for r in refs) for p, refs in zip(predictions, _reference_lists(references))]
    how = ("SQuAD normalization (lowercase, no punctuation, no a/an/the, single spaces)" if normalize
           else "outer whitespace trimmed only")
    return MetricResult({"exact_match": _mean(per)}, {"exact_match": per},
                        f"exact match after {how}; best reference per example; 0-1 scale")


def _token_f1_metric(predictions, references) -> MetricResult:
    _check(predictions, references)
    per = [max(_token_f1(p, r) for r in refs) for p, refs in zip(predictions, _reference_lists(references))]
    return MetricResult({"token_f1": _mean(per)}, {"token_f1": per},
                        "SQuAD token F1 over normalized words; best reference per example; corpus = mean; 0-1 scale")


# ------------------------------------------------------------------ label metrics (scikit-learn)

def _accuracy(predictions, references) -> MetricResult:
    from sklearn.metrics import accuracy_score

    _check(predictions, references)
    per = [float(p == r) for p, r in zip(predictions, references)]
    return MetricResult({"accuracy": float(accuracy_score(list(references), list(predictions)))},
                        {"accuracy": per}, "accuracy, scikit-learn accuracy_score; 0-1 scale")


def _macro_f1(predictions, references, *, labels: Sequence | None = None) -> MetricResult:
    from sklearn.metrics import f1_score

    _check(predictions, references)
    score = f1_score(list(references), list(predictions), labels=labels, average="macro", zero_division=0)
    return MetricResult({"macro_f1": float(score)}, {},
                        "macro F1, scikit-learn f1_score(average='macro', zero_division=0) over "
                        f"{'the given labels' if labels is not None else 'labels seen in references or predictions'}")


def _auc(predictions, references, *, labels: Sequence | None = None, pos_label=None) -> MetricResult:
    """ROC AUC. Binary: `predictions` are scores of the positive class ([N] or [N, 2], column 1),
    the positive reference is `pos_label`, else 1/True, else `labels[1]`, else the larger label.
    Several classes: `predictions` are [N, C] probabilities (rows sum to 1) in the order of
    `labels` (default: the sorted labels of the references), one-vs-rest macro average."""
    import numpy as np
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_auc_score

    _check(predictions, references)
    scores = np.asarray(predictions.tolist() if hasattr(predictions, "tolist") else predictions, dtype=float)
    refs = list(references.tolist() if hasattr(references, "tolist") else references)
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    if scores.ndim == 1:
        if pos_label is None:
            pos_label = (1 if set(refs) <= {0, 1} else labels[1] if labels is not None and len(labels) > 1
                         else max(set(refs)))  # scikit-learn's convention: the greater label is positive
        truth = [int(r == pos_label) for r in refs]
        how = f"binary ROC AUC, scikit-learn roc_auc_score, positive = {pos_label!r}"
        kwargs: dict = {}
    else:
        truth = refs
        classes = sorted(set(refs)) if labels is None else list(labels)
        if len(classes) != scores.shape[1]:
            raise ValueError(f"auc: {scores.shape[1]} score columns but {len(classes)} labels {classes!r}; "
                             f"pass labels= in column order")
        how = "one-vs-rest macro ROC AUC over classes, scikit-learn roc_auc_score(multi_class='ovr')"
        kwargs = {"multi_class": "ovr", "labels": classes}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        try:
            score, why = float(roc_auc_score(truth, scores, **kwargs)), ""
        except ValueError as e:  # e.g. a class of `labels` absent from a multiclass split
            score, why = float("nan"), str(e)
    if math.isnan(score):  # undefined (one class only): said in the settings, not hidden
        why = why or (str(caught[0].message) if caught else "one class only")
        how += f"; undefined here ({why}), reported as nan"
    return MetricResult({"auc": score}, {}, how)


def perplexity(loss_sum: float, tokens: int) -> float:
    """exp(mean token negative log-likelihood), from the summed loss (nats) over `tokens` tokens."""
    if tokens <= 0:
        raise ValueError(f"perplexity needs a positive token count, got {tokens}")
    try:
        return math.exp(loss_sum / tokens)
    except OverflowError:  # a diverged model: infinite perplexity, not a crash
        return math.inf


# ------------------------------------------------------------------ the registry

for _t in _ROUGE_TYPES:
    METRICS.register(_t, _rouge((_t,)))
METRICS.register("rouge", _rouge(_ROUGE_TYPES))
METRICS.register("bleu", _bleu)
METRICS.register("sentence_bleu", _sentence_bleu)
METRICS.register("chrf", _chrf)
METRICS.register("exact_match", _exact_match)
METRICS.register("token_f1", _token_f1_metric)
METRICS.register("accuracy", _accuracy)
METRICS.register("macro_f1", _macro_f1)
METRICS.register("auc", _auc)


def metric_options(name: str) -> list[str]:
    """The keyword options metric `name` takes (e.g. rouge: use_stemmer, precision_recall)."""
    import inspect

    params = inspect.signature(METRICS.get(name)).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def compute(names: str | Sequence[str], predictions: Sequence, references: Sequence,
            options: dict[str, dict] | None = None) -> dict:
    """Several metrics at once: `names` as a list or "rouge,bleu"; `options` maps a metric name to
    its keyword arguments. Returns {"corpus": {key: float}, "per_example": {key: [float]},
    "settings": {name: str}}; an unknown name raises ConfigError with "did you mean"."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    options = options or {}
    metrics = {name: METRICS.get(name) for name in names}  # every name checked before any work
    out: dict = {"corpus": {}, "per_example": {}, "settings": {}}
    for name, metric in metrics.items():
        result = metric(predictions, references, **options.get(name, {}))
        out["corpus"].update(result.corpus)
        out["per_example"].update(result.per_example)
        out["settings"][name] = result.settings
    return out


# ------------------------------------------------------------------ simple helpers other code calls

def exact_match(prediction: str, reference: str) -> float:
    """1.0 when prediction and reference are equal after trimming outer whitespace (no other normalization)."""
    return float(prediction.strip() == reference.strip())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one pair (rouge-score, default tokenizer, no stemming)."""
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure


def corpus_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean exact match and ROUGE-L F1 over aligned lists (as fractions in [0, 1])."""
    n = _check(predictions, references)
    return {"exact_match": sum(map(exact_match, predictions, references)) / n,
            "rouge_l": sum(map(rouge_l, predictions, references)) / n}
