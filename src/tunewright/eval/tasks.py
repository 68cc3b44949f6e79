"""What `tunewright eval` asks of each candidate, by the eval config's `task`:

    generate          answer each prompt (the candidate's template), score the text with `metrics`
    score             P(label | prompt) restricted to `labels`, no generation (eval/scoring.py):
                      accuracy, macro F1, AUC; the output is the most likely label
    multiple_choice   question/choices/answer rows by log-likelihood (eval/multiple_choice.py):
                      accuracy overall and per subject (accuracy_<subject>)
    classify          a classification head's class probabilities (eval/predict.py): accuracy,
                      macro F1, AUC (of class 1 with two classes)

Every task returns the same `TaskResult`, so compare.py writes one report, results.json and plots
for all of them: the candidates' corpus scores side by side, each row's output and per-row scores.
compare.py knows generation only (its default task); `evaluate` hands it the task the config names.
"""

from __future__ import annotations

from pathlib import Path

from tunewright.eval.compare import GENERATE, Comparison, DataCounts, EvalRow, Task, TaskResult, load_candidate, \
    rows_of, used_examples
from tunewright.eval.config import EvalRunConfig
from tunewright.errors import DataError

__all__ = ["TASKS", "evaluate"]


def _example_rows(cfg: EvalRunConfig):
    """(EvalRows, DataCounts, the formatted examples): prompts and references, and the rows to encode."""
    examples, counts = used_examples(cfg.data)
    return rows_of(examples), counts, examples


def _question_rows(cfg: EvalRunConfig):
    """(EvalRows, DataCounts, Questions) of a question/choices/answer file, after skip and limit."""
    from tunewright.eval.multiple_choice import LETTERS, load_questions

    questions = load_questions(cfg.data.path)
    kept = questions[cfg.data.skip:]
    if not kept:
        raise DataError(cfg.data.path, None, "skip", f"no rows left after skipping {cfg.data.skip} of {len(questions)}")
    used = kept[:cfg.data.limit] if cfg.data.limit else kept
    counts = DataCounts(read=len(questions), skipped=cfg.data.skip, cut=len(kept) - len(used), used=len(used))
    rows = [EvalRow(q.line, q.question, None, f"{LETTERS[q.answer]}. {q.choices[q.answer]}") for q in used]
    return rows, counts, used


def _score(cfg, candidate, rows, data) -> TaskResult:
    """Each row's label probabilities, prompted as `generate` would prompt it (templated turns or raw)."""
    import torch

    from tunewright.eval.labels import label_metrics
    from tunewright.eval.scoring import label_index, label_probabilities

    loaded = load_candidate(candidate)
    truth = [label_index(r.reference.strip(), cfg.labels, cfg.data.path, r.line) for r in rows]
    probs = torch.zeros(len(rows), len(cfg.labels))
    templated = [i for i, r in enumerate(rows) if loaded.template and r.messages is not None]
    for idx, raw in ((templated, False), (sorted(set(range(len(rows))) - set(templated)), True)):
        if idx:
            prompts = [rows[i].prompt if raw else rows[i].messages for i in idx]
            probs[idx] = label_probabilities(loaded.model, loaded.tokenizer, prompts, cfg.labels, loaded.template,
                                             cfg.generation.batch_size, raw=raw,
                                             system_prompt=None if raw else loaded.system_prompt)
    del loaded
    corpus = label_metrics(probs, truth)
    per_example = {"correct": [float(p == t) for p, t in zip(probs.argmax(-1).tolist(), truth)],
                   **{f"p_{label}": probs[:, k].tolist() for k, label in enumerate(cfg.labels)}}
    how = (f"P(label | prompt) over {cfg.labels} by summed label log-likelihood; accuracy, macro F1 "
           f"(scikit-learn) and ROC AUC of {'P(' + cfg.labels[1] + ')' if len(cfg.labels) == 2 else 'one-vs-rest'}")
    return TaskResult([cfg.labels[int(k)] for k in probs.argmax(-1)], corpus, per_example, {"labels": how})


def _multiple_choice(cfg, candidate, rows, questions) -> TaskResult:
    from tunewright.eval.multiple_choice import LETTERS, evaluate_multiple_choice

    loaded = load_candidate(candidate)
    mc = cfg.multiple_choice
    result = evaluate_multiple_choice(loaded.model, loaded.tokenizer, questions, mc.k_shot, mc.mode, mc.normalize,
                                      dev=mc.dev, template=loaded.template, system_prompt=loaded.system_prompt,
                                      batch_size=cfg.generation.batch_size)
    del loaded
    corpus = {"accuracy": result["accuracy"],
              **{f"accuracy_{s}": v["accuracy"] for s, v in result["per_subject"].items()}}
    per = result["per_example"]
    outputs = [f"{LETTERS[e['predicted']]}. {q.choices[e['predicted']]}" for e, q in zip(per, questions)]
    how = (f"{mc.k_shot}-shot, mode {mc.mode}, normalize {mc.normalize}; argmax of the choices' log-likelihood; "
           f"{result['fewer_shots']} prompts with fewer shots, {result['truncated']} cut on the left")
    return TaskResult(outputs, corpus, {"correct": [float(e["predicted"] == e["answer"]) for e in per]},
                      {"accuracy": how})


def _classify(cfg, candidate, rows, examples) -> TaskResult:
    import torch

    from tunewright.eval.labels import label_metrics
    from tunewright.eval.predict import load_classifier, predict_examples
    from tunewright.eval.scoring import label_index

    path = candidate.run or candidate.adapter or candidate.model
    model, tokenizer = load_classifier(path, base=candidate.model if (candidate.run or candidate.adapter) else None)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    predicted = predict_examples(model, tokenizer, examples, batch_size=cfg.generation.batch_size)
    del model
    if "probabilities" not in predicted[0] or "label" not in predicted[0]:
        raise ValueError(f"candidate {candidate.name}: task classify scores single-label heads")
    probs = torch.tensor([[p["probabilities"][n] for n in names] for p in predicted])
    truth = [label_index(p["reference"], names, cfg.data.path, p["line"]) for p in predicted]
    per_example = {"correct": [float(p["label"] == p["reference"]) for p in predicted],
                   **{f"p_{n}": probs[:, k].tolist() for k, n in enumerate(names)}}
    how = f"the head's softmax over {names}; accuracy, macro F1 (scikit-learn), ROC AUC of P({names[1]})" \
        if len(names) == 2 else f"the head's softmax over {names}; one-vs-rest ROC AUC"
    return TaskResult([p["label"] for p in predicted], label_metrics(probs, truth), per_example, {"classify": how})


def _describe_score(cfg):
    return f"label scoring: P(label | prompt) over {cfg.labels}, no generation"


def _describe_choice(cfg):
    mc = cfg.multiple_choice
    return (f"multiple choice by log-likelihood: {mc.k_shot}-shot, mode {mc.mode}"
            + (f", normalized by {mc.normalize}" if mc.normalize else ""))


TASKS = {
    "generate": GENERATE,
    "score": Task(_example_rows, _score, _describe_score),
    "multiple_choice": Task(_question_rows, _multiple_choice, _describe_choice),
    "classify": Task(_example_rows, _classify, lambda cfg: "the classification head's class probabilities"),
}


def evaluate(cfg: EvalRunConfig, out_dir: Path | None = None, echo=print) -> Comparison:
    """`tunewright eval`: every candidate asked `cfg.task`, then the report (compare.evaluate_candidates)."""
    from tunewright.eval.compare import evaluate_candidates
    return evaluate_candidates(cfg, out_dir, echo, task=TASKS[cfg.task])
