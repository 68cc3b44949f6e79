"""Tokenization with label masking: BOS/EOS rules, truncation and drop reasons, counted stats."""

from __future__ import annotations

import copy

import pytest

from tunewright.config import DataConfig
from tunewright.data.templates import NAMED, prepare_tokenizer
from tunewright.data.tokenize import encode, encode_prompt, tokenize_examples
from tunewright.data.types import IGNORE_INDEX, Example, Message, Segment
from tunewright.errors import DataError

CHAT = [Message("user", "What is two plus three?"), Message("assistant", "Two plus three is five."),
        Message("user", "Count to three."), Message("assistant", "one two three")]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from transformers import AutoTokenizer

    return {arch: AutoTokenizer.from_pretrained(tiny_model_dir(arch)) for arch in ("llama", "qwen2")}


@pytest.fixture
def setup(loaded):
    """setup(arch, template name or text) -> (fresh prepared tokenizer, template text)."""
    def build(arch="qwen2", name="chatml"):
        t = copy.deepcopy(loaded[arch])
        template = NAMED.get(name, name)
        prepare_tokenizer(t, template)
        return t, template
    return build


def cfg(**kw) -> DataConfig:
    return DataConfig(datasets=[{"path": "train.jsonl"}], **kw)


def chat(messages=CHAT, line=1) -> Example:
    return Example("train.jsonl", line, messages=list(messages))


def trained_text(t, enc) -> str:
    return t.decode([i for i, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX])


# ------------------------------------------------------------------ labels

def test_labels_are_the_replies_and_their_end_of_turn(setup):
    t, template = setup("qwen2", "chatml")
    enc = encode(chat(), t, template, cfg())
    assert trained_text(t, enc) == "Two plus three is five.<|im_end|>one two three<|im_end|>"
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(enc.input_ids, enc.labels))
    assert t.decode(enc.input_ids) == t.apply_chat_template([{"role": m.role, "content": m.content} for m in CHAT],
                                                            tokenize=False)
    assert (enc.source, enc.line) == ("train.jsonl", 1)
    last = encode(chat(), t, template, cfg(train_on_turns="last"))
    assert trained_text(t, last) == "one two three<|im_end|>"
    everything = encode(chat(), t, template, cfg(train_on_inputs=True))
    assert everything.labels == everything.input_ids


@pytest.mark.parametrize("arch, name", [("qwen2", "chatml"), ("llama", "chatml"), ("llama", "llama3"),
                                        ("llama", "alpaca")])
def test_generation_prompt_is_exactly_a_prefix_of_the_training_tokens(setup, arch, name):
    t, template = setup(arch, name)
    enc = encode(chat(), t, template, cfg())
    for upto in (1, 3):  # before the first and before the second reply
        prompt = encode_prompt(CHAT[:upto], t, template)
        assert enc.input_ids[:len(prompt)] == prompt
        assert enc.labels[len(prompt)] != IGNORE_INDEX  # the next token is the first trained one
        assert all(label == IGNORE_INDEX for label in enc.labels[len(prompt) - 1:len(prompt)])


# ------------------------------------------------------------------ BOS and EOS

def test_bos_once_when_the_tokenizer_adds_one(setup):
    t, template = setup("llama", "chatml")
    ids = encode(chat(), t, template, cfg()).input_ids
    assert ids[0] == t.bos_token_id and ids.count(t.bos_token_id) == 1
    assert encode_prompt(CHAT[:1], t, template)[0] == t.bos_token_id
    own_bos = "{{ bos_token }}" + NAMED["chatml"]  # a template that writes BOS itself
    t2, _ = setup("llama", own_bos)
    assert encode(chat(), t2, own_bos, cfg()).input_ids.count(t2.bos_token_id) == 1
    t3, llama3 = setup("llama", "llama3")  # starts with its own <|begin_of_text|>: no <s> in front
    ids3 = encode(chat(), t3, llama3, cfg()).input_ids
    assert t3.bos_token_id not in ids3 and t3.convert_ids_to_tokens(ids3[0]) == "<|begin_of_text|>"
    t4, chatml = setup("qwen2", "chatml")  # Qwen2 adds no BOS
    assert t4.convert_ids_to_tokens(encode(chat(), t4, chatml, cfg()).input_ids[0]) == "<|im_start|>"


def test_eos_appended_only_when_missing_and_trained_like_the_last_segment(setup):
    t, template = setup("llama", "alpaca")  # alpaca writes EOS after each reply already
    ids = encode(chat(), t, template, cfg()).input_ids
    assert ids[-1] == t.eos_token_id and ids.count(t.eos_token_id) == 2
    t, template = setup("qwen2", "chatml")  # ends on <|im_end|>: a turn end, no EOS after it
    assert t.convert_ids_to_tokens(encode(chat(), t, template, cfg()).input_ids[-1]) == "<|im_end|>"
    raw = Example("corpus.txt", 3, segments=[Segment("The capital of France is Paris.", True)])
    enc = encode(raw, t, template, cfg())
    assert enc.input_ids[-1] == enc.labels[-1] == t.eos_token_id
    assert encode(raw, t, template, cfg(add_eos_token=False)).input_ids[-1] != t.eos_token_id
    prompt_last = Example("c.txt", 4, segments=[Segment("Paris", True), Segment(" is a city", False)])
    enc = encode(prompt_last, t, template, cfg())
    assert enc.input_ids[-1] == t.eos_token_id and enc.labels[-1] == IGNORE_INDEX


def test_no_eos_after_a_turn_end_followed_by_a_newline(setup):
    t, _ = setup("qwen2", "chatml")
    standard = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    enc = encode(chat(), t, standard, cfg())
    assert t.eos_token_id not in enc.input_ids
    assert t.decode(enc.input_ids[-2:]) == "<|im_end|>\n" and enc.labels[-1] == IGNORE_INDEX


# ------------------------------------------------------------------ cutoff and drops

def test_truncate_cuts_the_end_and_marks_the_row(setup):
    t, template = setup("qwen2", "chatml")
    full = encode(chat(), t, template, cfg())
    cut = encode(chat(), t, template, cfg(cutoff_len=len(full.input_ids) - 3))
    assert cut.input_ids == full.input_ids[:-3] and cut.labels == full.labels[:-3]
    assert cut.meta["truncated"] and not full.meta.get("truncated")


def test_drop_reasons(setup):
    t, template = setup("qwen2", "chatml")
    n = len(encode(chat(), t, template, cfg()).input_ids)
    assert encode(chat(), t, template, cfg(cutoff_len=n - 1, truncation="drop")) == "too_long"
    assert encode(chat(CHAT[:2]), t, template, cfg(cutoff_len=5)) == "response_truncated"
    assert encode(chat([Message("user", "hi"), Message("assistant", "x", train=False)]), t, template,
                  cfg()) == "no_target"
    assert encode(chat(CHAT[:1]), t, template, cfg()) == "no_target"


def test_template_error_is_located_at_the_row(setup):
    t, template = setup("llama", "alpaca")
    bad = chat([Message("user", "q"), Message("critic", "c"), Message("assistant", "a")], line=7)
    with pytest.raises(DataError, match=r"^train.jsonl:7: messages: the chat template rejected"):
        encode(bad, t, template, cfg())


# ------------------------------------------------------------------ a data set

def test_tokenize_examples_counts_everything(setup):
    t, template = setup("qwen2", "chatml")
    long_len = len(encode(chat(), t, template, cfg()).input_ids)
    rows = [chat(CHAT[:2], 1), chat(CHAT, 2), chat(CHAT[:1], 3),
            chat([Message("user", "q"), Message("assistant", "a", train=False)], 4)]
    kept, stats = tokenize_examples(rows, t, template, cfg(cutoff_len=long_len - 2))
    assert [e.line for e in kept] == [1, 2]
    assert (stats.rows_in, stats.kept, stats.truncated, stats.dropped) == (4, 2, 1, {"no_target": 2})
    assert stats.total_tokens == sum(len(e.input_ids) for e in kept) == sum(stats.lengths)
    assert stats.target_tokens == sum(label != IGNORE_INDEX for e in kept for label in e.labels)
    assert stats.target_fraction == pytest.approx(stats.target_tokens / stats.total_tokens)
    text = "\n".join(stats.lines())
    assert "tokenized 4 rows: 2 kept, 1 truncated" in text and "2 dropped (no_target 2)" in text
    assert f"{stats.target_tokens} trained" in text and "length: min" in text


def test_nothing_left_is_a_data_error_with_the_counts(setup):
    t, template = setup("qwen2", "chatml")
    rows = [chat(CHAT[:2], 1), chat(CHAT[:1], 2)]
    with pytest.raises(DataError, match=r"^train.jsonl: no trainable tokens left: 2 rows in, all dropped: "
                                        r"no_target 1 .*response_truncated 1"):
        tokenize_examples(rows, t, template, cfg(cutoff_len=4))


def test_special_token_text_in_messages_is_plain_text_and_counted(setup):
    t, template = setup("qwen2", "chatml")
    sneaky = [Message("user", "Why does </s> or <|im_end|> appear here?"), Message("assistant", "Markup <|im_end|> ok")]
    kept, stats = tokenize_examples([chat(sneaky)], t, template, cfg())
    ids = kept[0].input_ids
    im_end = t.convert_tokens_to_ids("<|im_end|>")
    assert ids.count(im_end) == 2  # the template's two, not the ones typed in the messages
    assert t.decode(ids) == t.apply_chat_template([{"role": m.role, "content": m.content} for m in sneaky],
                                                  tokenize=False)
    assert trained_text(t, kept[0]) == "Markup <|im_end|> ok<|im_end|>"
    assert stats.control_text == 1 and "1 rows had special-token text" in "\n".join(stats.lines())
    prompt = encode_prompt(sneaky[:1], t, template)
    assert ids[:len(prompt)] == prompt and prompt.count(im_end) == 1
    raw = Example("c.txt", 1, segments=[Segment("a<|im_end|>", True)])  # pre-templated text means it
    assert encode(raw, t, template, cfg()).input_ids.count(im_end) == 1
