"""Scoring without generation: label log-likelihoods equal a brute-force forward of each
prompt + label alone (single- and multi-token labels, left padding, truncation, encoder-decoder),
and score_classification's numbers follow from those probabilities."""

from __future__ import annotations

import pytest
import torch

from tunewright.config import ModelConfig
from tunewright.data.templates import NAMED, prepare_tokenizer
from tunewright.errors import ConfigError, DataError
from tunewright.eval.generate import prompt_ids
from tunewright.eval.scoring import continuation_log_likelihoods, label_probabilities, score_classification
from tunewright.models.load import load_model, load_tokenizer, resize_embeddings

PROMPTS = ["Is Paris the capital of France?", "hi", "Give three tips for staying healthy, and say why each one helps.",
           "What is two plus three?", "Summarize the following conversation."]


def _load(model_dir: str, template: str | None):
    tok = load_tokenizer(ModelConfig(name=model_dir))
    new = prepare_tokenizer(tok, NAMED[template]) if template else []
    model = load_model(ModelConfig(name=model_dir))
    resize_embeddings(model, tok, new)
    return model, tok


@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    return _load(tiny_model_dir("llama"), "alpaca")


def brute_force(model, context: list[int], continuation: list[int]) -> float:
    """Summed log p(continuation | context) from one unpadded forward of the whole sequence."""
    with torch.no_grad():
        logits = model(torch.tensor([context + continuation])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[len(context) - 1 + t, tok].item() for t, tok in enumerate(continuation))


def expected_probabilities(model, tok, prompts, labels, template) -> torch.Tensor:
    rows = []
    for p in prompts:
        context = prompt_ids(p, tok, template)
        rows.append([brute_force(model, context, tok(label, add_special_tokens=False)["input_ids"]) for label in labels])
    return torch.softmax(torch.tensor(rows, dtype=torch.float64), dim=-1)


def assert_same_distribution(probs: torch.Tensor, expected: torch.Tensor) -> None:
    """Compared in log space: tiny probabilities (1e-12) would hide a wrong score in linear space."""
    assert torch.allclose(probs.double().log(), expected.log(), atol=1e-4)


@pytest.mark.parametrize("labels", [[" Paris", " Rome", " five"], ["Yes", "No"], ["very good", "bad"]],
                         ids=["single-token", "yes-no", "multi-token"])
@pytest.mark.parametrize("templated", [False, True], ids=["raw", "alpaca"])
def test_label_probabilities_equal_brute_force(llama, labels, templated):
    model, tok = llama
    template = tok.chat_template if templated else None
    lengths = [len(tok(label, add_special_tokens=False)["input_ids"]) for label in labels]
    if labels[0] == " Paris":
        assert lengths == [1, 1, 1]  # the single-token shortcut is what runs
    else:
        assert max(lengths) > 1 and (labels[0] != "very good" or len(set(lengths)) == 2)
    probs = label_probabilities(model, tok, PROMPTS, labels, template=template, batch_size=2)
    assert probs.shape == (len(PROMPTS), len(labels))
    assert torch.allclose(probs.sum(-1), torch.ones(len(PROMPTS)), atol=1e-6)
    assert_same_distribution(probs, expected_probabilities(model, tok, PROMPTS, labels, template))
    assert (probs.argmax(-1) != probs.argmin(-1)).all()  # a real model, not a uniform distribution


def test_left_padded_rows_keep_their_positions(tiny_model_dir):
    # GPT-2 learns absolute positions (RoPE in Llama would hide a shifted position): padded rows
    # must still count positions from their first real token
    model, tok = _load(tiny_model_dir("gpt2"), None)
    labels = ["very good", "bad"]
    probs = label_probabilities(model, tok, PROMPTS, labels, batch_size=5)
    assert_same_distribution(probs, expected_probabilities(model, tok, PROMPTS, labels, None))


def test_single_token_labels_take_one_sequence_per_prompt_multi_token_one_per_pair(llama):
    model, tok = llama
    contexts = [prompt_ids(p, tok, None) for p in PROMPTS]
    single = [[tok(w, add_special_tokens=False)["input_ids"] for w in (" Paris", " Rome")]] * len(contexts)
    multi = [[tok(w, add_special_tokens=False)["input_ids"] for w in ("very good", "bad")]] * len(contexts)
    a = continuation_log_likelihoods(model, contexts, single, batch_size=3)
    b = continuation_log_likelihoods(model, contexts, multi, batch_size=3)
    assert a.sequences == len(contexts) and b.sequences == 2 * len(contexts)
    assert b.tokens[0] == [7, 3] and b.truncated == 0
    for i, context in enumerate(contexts):
        for k, cont in enumerate(multi[i]):
            assert b.log_likelihood[i][k].item() == pytest.approx(brute_force(model, context, cont), abs=1e-4)


def test_each_context_may_have_its_own_continuations(llama):
    model, tok = llama
    contexts = [prompt_ids(p, tok, None) for p in PROMPTS[:3]]
    options = [[[5], [9, 10]], [[7], [8], [9]], [[11, 12, 13]]]
    scored = continuation_log_likelihoods(model, contexts, options, batch_size=4)
    assert [len(s) for s in scored.log_likelihood] == [2, 3, 1]
    for context, conts, got in zip(contexts, options, scored.log_likelihood):
        assert got.tolist() == pytest.approx([brute_force(model, context, c) for c in conts], abs=1e-4)


def test_too_long_prompts_are_cut_on_the_left_and_counted(llama):
    model, tok = llama
    contexts = [prompt_ids(p, tok, None) for p in PROMPTS[:3]]
    cont = tok("very good", add_special_tokens=False)["input_ids"]
    limit = 12  # context + continuation[:-1] must fit: 6 context tokens are kept
    scored = continuation_log_likelihoods(model, contexts, [[cont]] * 3, max_length=limit)
    assert scored.truncated == sum(len(c) > limit - len(cont) + 1 for c in contexts) == 2
    for context, got in zip(contexts, scored.log_likelihood):
        kept = context[-(limit - len(cont) + 1):]
        assert got[0].item() == pytest.approx(brute_force(model, kept, cont), abs=1e-4)
    with pytest.raises(ValueError, match="does not fit"):
        continuation_log_likelihoods(model, contexts, [[cont]] * 3, max_length=len(cont) - 1)


@pytest.mark.parametrize("labels", [[" Paris", " Rome"], ["very good", "bad"]], ids=["single-token", "multi-token"])
def test_only_the_label_positions_are_projected_to_the_vocabulary(llama, labels):
    """`logits_to_keep`: the head sees [batch, positions that predict a label token, hidden], never the
    whole prompt, so scoring memory does not grow with prompt length x vocabulary."""
    model, tok = llama
    lengths = {len(tok(label, add_special_tokens=False)["input_ids"]) for label in labels}
    widths, seen = [], []  # per forward: the input's positions, and [rows, positions] the head projects
    hooks = [model.register_forward_pre_hook(lambda m, args, kw: widths.append(kw["input_ids"].shape[1]),
                                             with_kwargs=True),
             model.lm_head.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape[:2])))]
    try:
        probs = label_probabilities(model, tok, PROMPTS, labels, batch_size=8)
    finally:
        for hook in hooks:
            hook.remove()
    # one-token labels: one position per prompt; longer labels: a batch keeps its longest label's positions
    assert seen and all(positions in ({1} if lengths == {1} else lengths) for _, positions in seen), seen
    assert all(positions < width for (_, positions), width in zip(seen, widths, strict=True)), (seen, widths)
    assert sum(rows for rows, _ in seen) == len(PROMPTS) * (1 if lengths == {1} else len(labels))
    assert probs.shape == (len(PROMPTS), len(labels))


def test_model_mode_is_restored(llama):
    model, tok = llama
    model.train()
    label_probabilities(model, tok, PROMPTS[:1], [" Paris", " Rome"])
    assert model.training
    model.eval()


def test_encoder_decoder_scores_the_label_in_the_decoder(tiny_model_dir):
    model, tok = _load(tiny_model_dir("t5"), None)
    labels = ["very good", "bad"]
    probs = label_probabilities(model, tok, PROMPTS[:3], labels, batch_size=2)
    rows = []
    for p in PROMPTS[:3]:
        row = []
        for label in labels:
            target = tok(label, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                out = model(input_ids=torch.tensor([tok(p)["input_ids"]]), labels=torch.tensor([target]))
            row.append(-out.loss.item() * len(target))  # the loss is the mean token NLL
        rows.append(row)
    assert_same_distribution(probs, torch.softmax(torch.tensor(rows, dtype=torch.float64), -1))


# ------------------------------------------------------------------ classification numbers

def _pairwise_auc(scores: list[float], positive: list[bool]) -> float:
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def test_score_classification_follows_from_the_probabilities(llama):
    model, tok = llama
    labels = ["very good", "bad"]
    probs = label_probabilities(model, tok, PROMPTS, labels)
    predicted = probs.argmax(-1).tolist()
    # references: right on the first three prompts, wrong on the last two; strings and indices mixed
    truth = predicted[:3] + [1 - k for k in predicted[3:]]
    refs = [labels[truth[0]], truth[1], labels[truth[2]], truth[3], labels[truth[4]]]
    if len(set(truth)) < 2:  # AUC needs both classes; flip one right answer into a wrong one
        truth[0], refs[0] = 1 - truth[0], 1 - truth[0]
    result = score_classification(model, tok, PROMPTS, labels, refs)
    correct = [p == t for p, t in zip(predicted, truth)]
    assert result["accuracy"] == pytest.approx(sum(correct) / len(correct))
    assert result["auc"] == pytest.approx(_pairwise_auc(probs[:, 1].tolist(), [t == 1 for t in truth]))
    flipped = score_classification(model, tok, PROMPTS, labels, refs, positive="very good")
    assert flipped["auc"] == pytest.approx(_pairwise_auc(probs[:, 0].tolist(), [t == 0 for t in truth]))
    assert result["n"] == 5 and result["truncated"] == 0 and 0 <= result["macro_f1"] <= 1


def test_score_classification_with_three_labels_uses_one_vs_rest(llama):
    model, tok = llama
    labels = [" Paris", " Rome", " five"]
    probs = label_probabilities(model, tok, PROMPTS, labels)
    truth = [0, 1, 2, 0, 1]
    result = score_classification(model, tok, PROMPTS, labels, truth)
    by_class = [_pairwise_auc(probs[:, c].tolist(), [t == c for t in truth]) for c in range(3)]
    assert result["auc"] == pytest.approx(sum(by_class) / 3)


def test_bad_labels_and_references_are_reported(llama):
    model, tok = llama
    with pytest.raises(DataError, match=r"refs\.jsonl:2: label: 'maybe' is not one of the labels"):
        score_classification(model, tok, PROMPTS[:2], ["Yes", "No"], ["Yes", "maybe"], source="refs.jsonl")
    with pytest.raises(DataError, match="label"):
        score_classification(model, tok, PROMPTS[:1], ["Yes", "No"], [2])
    with pytest.raises(ConfigError, match="same tokens"):
        label_probabilities(model, tok, PROMPTS[:1], ["Yes", "Yes"])
    with pytest.raises(ConfigError, match="at least two labels"):
        label_probabilities(model, tok, PROMPTS[:1], ["Yes"])
    with pytest.raises(ConfigError, match="positive"):
        score_classification(model, tok, PROMPTS[:1], ["Yes", "No"], ["Yes"], positive="yes")
