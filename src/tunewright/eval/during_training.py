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


def metric_evaluator(cfg, built, eval_examples) -> Callable[[object], dict] | None:
    """A function model -> {"eval_<key>": value} for `cfg.eval` (None when no metric is asked for).

    `built` is run.Built (tokenizer, template, kind); `eval_examples` the formatted evaluation rows.
    """
    from tunewright.eval.compare import Loaded, answer, rows_of, score
    from tunewright.eval.config import Generation

    ev = cfg.eval
    if not (ev.metrics or ev.labels) or not eval_examples:
        return None
    rows = rows_of(eval_examples[:ev.max_examples] if ev.max_examples else eval_examples)
    references = [r.reference.strip() for r in rows]
    template = built.template or None
    system = cfg.data.system_prompt

    def prompts():
        raw = template is None or built.kind == "seq2seq"
        return [r.prompt if raw or r.messages is None else r.messages for r in rows], raw

    if ev.labels:
        from tunewright.eval.scoring import score_classification

        def evaluate(model) -> dict:
            texts, raw = prompts()
            got = score_classification(model, built.tokenizer, texts, ev.labels, references, template=template,
                                       raw=raw, system_prompt=None if raw else system, source="eval rows")
            return {f"eval_{k}": got[k] for k in ("accuracy", "macro_f1", "auc")}
        return evaluate

    from tunewright.data.templates import end_of_turn_ids
    eos = end_of_turn_ids(built.tokenizer, built.template) if built.kind == "causal_lm" else None

    def evaluate(model) -> dict:
        loaded = Loaded(model, built.tokenizer, template if built.kind == "causal_lm" else None, system, eos,
                        encoder_decoder=built.kind == "seq2seq")
        predictions = answer(loaded, rows, Generation(max_new_tokens=ev.max_new_tokens))
        corpus, _, _ = score(list(ev.metrics), predictions, references)
        return {f"eval_{k}": v for k, v in corpus.items()}
    return evaluate
