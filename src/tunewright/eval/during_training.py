"""Metrics beyond the loss at each evaluation during training, for early stopping and the best
checkpoint (e.g. stop when eval AUC has not improved for 3 evaluations).

Two kinds, chosen in the `eval` section:
  eval.metrics: [rougeL, exact_match, ...]  generate an answer for each evaluation row, score the text
  eval.labels: [No, Yes]                    no generation: the probability of each label at the
                                            answer position, restricted to the labels -> accuracy,
                                            macro F1 and AUC (P of the last label)

Scoring reads only the logits of the label tokens (`logits_to_keep`), so memory stays flat
whatever the vocabulary. Both use the training template, so prompts match what the model learned.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["metric_evaluator"]


def metric_evaluator(cfg, tokenizer, template: str, objective, eval_examples) -> Callable[[object], dict] | None:
    """A function model -> {"eval_<key>": value} for `cfg.eval` (None when no metric is asked for).

    `template` is the run's ("" for raw text), `objective` its objective module (a templated one's
    prompts go through the template, and its `end_ids` stop generation), `eval_examples` the
    formatted evaluation rows.
    """
    from tunewright.eval.compare import Loaded, answer, rows_of, score
    from tunewright.eval.config import Generation

    ev = cfg.eval
    if not (ev.metrics or ev.labels) or not eval_examples:
        return None
    rows = rows_of(eval_examples[:ev.max_examples] if ev.max_examples else eval_examples)
    references = [r.reference.strip() for r in rows]
    templated = objective.TEMPLATED and bool(template)
    system = cfg.data.system_prompt

    def prompts():
        raw = not templated
        return [r.prompt if raw or r.messages is None else r.messages for r in rows], raw

    if ev.labels:
        from tunewright.eval.scoring import score_classification

        def evaluate(model) -> dict:
            texts, raw = prompts()
            got = score_classification(model, tokenizer, texts, ev.labels, references, template=template or None,
                                       raw=raw, system_prompt=None if raw else system, source="eval rows")
            return {f"eval_{k}": got[k] for k in ("accuracy", "macro_f1", "auc")}
        return evaluate

    eos = objective.end_ids(tokenizer, template) if objective.TEMPLATED else None

    def evaluate(model) -> dict:
        loaded = Loaded(model, tokenizer, template if templated else None, system, eos,
                        encoder_decoder=bool(getattr(model.config, "is_encoder_decoder", False)))
        predictions = answer(loaded, rows, Generation(max_new_tokens=ev.max_new_tokens))
        corpus, _, _ = score(list(ev.metrics), predictions, references)
        return {f"eval_{k}": v for k, v in corpus.items()}
    return evaluate
