"""generate(): the training template's prompt tokens (train/serve identity, one BOS), greedy and
seeded sampling, max_new_tokens, stop strings, and left padding that changes nothing."""

from __future__ import annotations

import re

import pytest
import torch

from tunewright.config import DataConfig, ModelConfig
from tunewright.data.seq2seq import encode_seq2seq
from tunewright.data.templates import NAMED, prepare_tokenizer
from tunewright.data.tokenize import tokenize_examples
from tunewright.data.types import IGNORE_INDEX, Example, Message
from tunewright.eval.generate import generate, prompt_ids
from tunewright.models.load import load_model, load_tokenizer, resize_embeddings

PROMPTS = ["Why do cats purr?", "hi", "Give three tips for staying healthy, and say why each one helps."]


def setup(model_dir: str, template: str | None = "alpaca"):
    """(model with a generate() spy, tokenizer with the template installed, the spy's calls)."""
    tok = load_tokenizer(ModelConfig(name=model_dir))
    new = prepare_tokenizer(tok, NAMED[template]) if template else []
    model = load_model(ModelConfig(name=model_dir))
    resize_embeddings(model, tok, new)
    calls: list[dict] = []
    inner = model.generate

    def spy(**kw):
        out = inner(**kw)
        calls.append({"input_ids": kw["input_ids"].clone(), "attention_mask": kw["attention_mask"].clone(),
                      "output": out.clone()})
        return out

    model.generate = spy
    return model, tok, calls


@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    return setup(tiny_model_dir("llama"))


@pytest.fixture
def spied(llama):
    model, tok, calls = llama
    calls.clear()
    return model, tok, calls


def run(model, tok, prompts, **kw):
    return generate(model, tok, prompts, template=tok.chat_template, **kw)


@pytest.mark.parametrize("template", ["alpaca", "chatml", "llama3"])
@pytest.mark.parametrize("system", [None, "Answer briefly."])
def test_prompt_tokens_are_the_training_prefix(template, system, tiny_model_dir):
    model, tok, calls = setup(tiny_model_dir("llama"), template)
    cfg = DataConfig(datasets=[{"path": "x.jsonl"}], system_prompt=system)
    example = Example("x.jsonl", 1, messages=[Message("user", PROMPTS[0]), Message("assistant", "They are content.")])
    (encoded,), _ = tokenize_examples([example], tok, tok.chat_template, cfg)
    generate(model, tok, [PROMPTS[0]], template=tok.chat_template, max_new_tokens=1, system_prompt=system)
    fed = calls[0]["input_ids"][0].tolist()
    assert fed == encoded.input_ids[:len(fed)]
    # the prompt ends exactly where the trained reply begins
    assert set(encoded.labels[:len(fed)]) == {IGNORE_INDEX} and encoded.labels[len(fed)] != IGNORE_INDEX
    # one sequence start: the tokenizer's BOS, or the template's own marker (llama3), never both
    starts = {tok.bos_token_id} | {i for t, i in tok.get_vocab().items() if t == "<|begin_of_text|>"}
    assert fed[0] in starts and sum(t in starts for t in fed) == 1
    if system:
        assert system in tok.decode(fed)


def test_encoder_decoder_prompt_is_the_training_encoder_input(tiny_model_dir):
    model, tok, calls = setup(tiny_model_dir("t5"), template=None)
    example = Example("x.jsonl", 1, messages=[Message("user", PROMPTS[0]), Message("assistant", "Content.")])
    encoded = encode_seq2seq(example, tok, DataConfig(datasets=[{"path": "x.jsonl"}]))
    outs = generate(model, tok, [PROMPTS[0]], template=None, max_new_tokens=3)
    assert calls[0]["input_ids"][0].tolist() == encoded.input_ids
    assert calls[0]["output"].shape[1] <= 4 and isinstance(outs[0], str)  # decoder start + at most 3 new


def test_greedy_is_deterministic(spied):
    model, tok, calls = spied
    first = run(model, tok, PROMPTS, max_new_tokens=12)
    assert run(model, tok, PROMPTS, max_new_tokens=12) == first
    assert len(first) == len(PROMPTS) and any(first)


def test_sampling_is_reproducible_per_seed_and_differs_across_seeds(spied):
    model, tok, _ = spied
    a, b, c = (run(model, tok, PROMPTS, max_new_tokens=12, do_sample=True, temperature=1.5, seed=s) for s in (1, 1, 2))
    assert a == b and a != c


def test_max_new_tokens_bounds_the_output(spied):
    model, tok, calls = spied
    run(model, tok, PROMPTS[:1], max_new_tokens=20)
    run(model, tok, PROMPTS[:1], max_new_tokens=3)
    (long, short), width = calls, calls[0]["input_ids"].shape[1]
    assert long["output"].shape[1] - width > 3 and short["output"].shape[1] - width == 3
    assert torch.equal(short["output"], long["output"][:, :width + 3])  # greedy: a prefix of the longer run


def test_stop_strings_cut_the_text_and_stop_generation(spied):
    model, tok, calls = spied
    full = run(model, tok, PROMPTS[:1], max_new_tokens=30)[0]
    stop = re.search(r"[A-Za-z]{3}", full[4:]).group()
    cut = run(model, tok, PROMPTS[:1], max_new_tokens=30, stop=[stop])[0]
    assert cut == full[:full.index(stop)] and stop not in cut
    assert calls[1]["output"].shape[1] < calls[0]["output"].shape[1]
    assert run(model, tok, PROMPTS[:1], max_new_tokens=30, stop=["never appears", stop])[0] == cut


def test_left_padded_batch_equals_each_prompt_alone(spied):
    model, tok, calls = spied
    batch = run(model, tok, PROMPTS, max_new_tokens=10)
    alone = [run(model, tok, [p], max_new_tokens=10)[0] for p in PROMPTS]
    assert batch == alone and len(set(alone)) > 1  # different prompts, different (non-trivial) outputs
    ids, mask = calls[0]["input_ids"], calls[0]["attention_mask"]
    lengths = [len(prompt_ids(p, tok, tok.chat_template)) for p in PROMPTS]
    assert len(set(lengths)) == len(lengths)  # the padding is really exercised
    by_length = sorted(range(len(PROMPTS)), key=lambda i: -lengths[i])  # the batch's rows, longest first
    for row, i in enumerate(by_length):
        pad = ids.shape[1] - lengths[i]
        assert mask[row].tolist() == [0] * pad + [1] * lengths[i]  # padding on the left, prompt flush right
        assert ids[row, pad:].tolist() == calls[1 + i]["input_ids"][0].tolist()


def test_batches_hold_prompts_of_similar_length_and_answers_keep_the_prompts_order(spied):
    model, tok, calls = spied
    prompts = ["hi", PROMPTS[2], "yo", PROMPTS[2] + " Be brief."]  # short, long, short, long
    out = run(model, tok, prompts, max_new_tokens=6, batch_size=2)
    widths = [c["input_ids"].shape[1] for c in calls]
    lengths = sorted(len(prompt_ids(p, tok, tok.chat_template)) for p in prompts)
    assert widths == [lengths[3], lengths[1]]  # the two long prompts together, then the two short ones
    assert sum(int((c["attention_mask"] == 0).sum()) for c in calls) == (lengths[3] - lengths[2]) + (lengths[1] - lengths[0])
    calls.clear()
    assert out == [run(model, tok, [p], max_new_tokens=6)[0] for p in prompts]


def test_batch_size_splits_without_changing_outputs(spied):
    model, tok, calls = spied
    whole = run(model, tok, PROMPTS, max_new_tokens=6)
    assert run(model, tok, PROMPTS, max_new_tokens=6, batch_size=2) == whole
    assert [c["input_ids"].shape[0] for c in calls[1:]] == [2, 1]


def test_raw_prompts_skip_the_template(spied):
    model, tok, calls = spied
    run(model, tok, ["plain text"], raw=True, max_new_tokens=2)
    assert calls[0]["input_ids"][0].tolist() == tok("plain text", add_special_tokens=True)["input_ids"]


def test_a_conversation_prompt_holds_every_turn(spied):
    model, tok, calls = spied
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"},
               {"role": "user", "content": "Why do cats purr?"}]
    run(model, tok, [history[:1]], max_new_tokens=2)
    run(model, tok, [history], max_new_tokens=2)
    first, second = (c["input_ids"][0].tolist() for c in calls)
    assert second[:len(first)] == first
    assert "hello there" in tok.decode(second) and tok.decode(second).count("### Instruction:") == 2
