"""Generative replay (Shin et al. 2017, "Continual Learning with Deep Generative Replay", NeurIPS):
before task i, pseudo-rows of the earlier tasks are sampled from the model as it is before task i
and mixed into task i's data, as replay's buffer is (replay.py), without keeping any real row.

The variant built, for a classification head: inputs from the pre-task language model, labels from
the pre-task classifier.

    the pre-task language model   the previous task's final/ classifier's body (the decoder stack,
                                  its LoRA merged) under the base model's own LM head: the tasks
                                  train a classifier, never an LM head, so that head is the base's
                                  (with tied embeddings, as SmolLM2's, it is the body's embedding)
    inputs                        `samples` texts of `length` tokens each, sampled (temperature 1,
                                  no top-k/top-p) from the beginning-of-text token, seeded by
                                  (train.seed, task index); the run's own random state is untouched
    labels                        the pre-task classifier's prediction for each text as written,
                                  encoded as training encodes it, its argmax over the earlier tasks'
                                  classes only (the new task's classes were never trained)

The pseudo-rows are written to <sequence>/generative-<i>.jsonl as `classification` rows and mixed
in at `ratio` of the task's training rows with replay's weight (replay.mix_weight), through the
run's seeded mixture and epoch plan. A sequence run again samples them again: the same seed on the
same weights gives the same file (on CPU, bit for bit), so a resumed task sees the same rows.
Not built: prompting the generator per task or class (the tasks' prompts are their rows, which
generative replay must not keep). Memory: the pre-task classifier and an LM of the same size while
sampling; disk: the pseudo-rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from tunewright.sections import Section

__all__ = ["Config", "pretask_language_model", "sample_texts", "label_texts", "pseudo_rows"]


class Config(Section):
    name: Literal["generative_replay"] = Field("generative_replay", description=(
        "Generative replay: pseudo-rows sampled from the model before each task, labelled by its classifier."))
    samples: int = Field(64, ge=1, description="Pseudo-rows sampled before each task after the first.")
    length: int = Field(24, ge=1, description="Tokens sampled per pseudo-row's text.")
    ratio: float = Field(0.1, gt=0, lt=1, description="Share of a task's training rows that are pseudo-rows.")


def pretask_language_model(previous: Path, base_cfg):
    """A causal LM: the base model's (its LM head) with the body of the classifier saved in
    `previous` (its LoRA merged), embeddings sized to that classifier's tokenizer (its pad token)."""
    from tunewright.eval.predict import load_classifier
    from tunewright.models.load import load_model

    classifier, tokenizer = load_classifier(previous)
    if hasattr(classifier, "merge_and_unload"):
        classifier = classifier.merge_and_unload()
    lm = load_model(base_cfg, "causal_lm")
    lm.resize_token_embeddings(len(tokenizer))
    lm.base_model.load_state_dict(classifier.base_model.state_dict())
    return lm.eval()


def sample_texts(lm, tokenizer, n: int, length: int, seed: int) -> list[str]:
    """`n` texts of `length` sampled tokens each from the beginning-of-text token, seeded; the
    global random state is restored afterwards."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prompt = torch.full((n, 1), start, dtype=torch.long, device=next(lm.parameters()).device)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        out = lm.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=1.0, top_k=0,
                          top_p=1.0, max_new_tokens=length, min_new_tokens=length,
                          pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True)


def label_texts(classifier, tokenizer, texts: list[str], old: list[str], cutoff_len: int) -> list[str]:
    """The classifier's predicted class for each text, among the classes `old` only."""
    from tunewright.data.types import Example, Message
    from tunewright.eval.predict import predict_examples

    examples = [Example("<generated>", i + 1, [Message("user", t), Message("assistant", old[0])])
                for i, t in enumerate(texts)]
    return [max(old, key=p["probabilities"].get)
            for p in predict_examples(classifier, tokenizer, examples, cutoff_len)]


def pseudo_rows(previous: Path, base_cfg, old: list[str], settings: Config, seed: int, cutoff_len: int) -> list[dict]:
    """The pseudo-rows ({"text", "label"}) sampled from and labelled by the model in `previous` (a final/)."""
    from tunewright.eval.predict import load_classifier

    classifier, tokenizer = load_classifier(previous)
    texts = sample_texts(pretask_language_model(previous, base_cfg), tokenizer, settings.samples, settings.length,
                         seed)
    texts = [t if t.strip() else "." for t in texts]  # a text of special tokens alone decodes empty: not a row
    return [{"text": t, "label": label}
            for t, label in zip(texts, label_texts(classifier, tokenizer, texts, old, cutoff_len))]
