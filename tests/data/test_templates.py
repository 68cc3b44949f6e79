"""Named templates, tokenizer preparation, and rendering conversations into trained segments."""

from __future__ import annotations

import copy

import pytest

from tunewright.data.templates import (NAMED, end_of_turn_ids, prepare_tokenizer, render, resolve_template)
from tunewright.data.types import Message
from tunewright.errors import ConfigError, DataError

ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                "### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                   "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
# ChatML as Qwen and SmolLM2 ship it: a newline after every <|im_end|>.
STANDARD_CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
                   "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from transformers import AutoTokenizer

    return {arch: AutoTokenizer.from_pretrained(tiny_model_dir(arch)) for arch in ("llama", "qwen2")}


@pytest.fixture
def tok(loaded):
    """A fresh copy of a tiny tokenizer (prepare_tokenizer mutates it)."""
    return lambda arch="llama": copy.deepcopy(loaded[arch])


def prepared(tokenizer, name):
    template = resolve_template(name, tokenizer)
    prepare_tokenizer(tokenizer, template)
    return template


def texts(segments):
    return [(s.text, s.train) for s in segments]


# ------------------------------------------------------------------ the named templates

def test_alpaca_renders_the_two_stanford_prompts(tok):
    t = tok()
    template = prepared(t, "alpaca")
    with_input = render([Message("user", "Add the numbers.", context="2 and 3"), Message("assistant", "5")], t, template)
    assert texts(with_input) == [(ALPACA_INPUT.format(instruction="Add the numbers.", input="2 and 3"), False),
                                 ("5</s>", True)]
    without = render([Message("user", "Name a colour."), Message("assistant", "Red")], t, template)
    assert texts(without) == [(ALPACA_NO_INPUT.format(instruction="Name a colour."), False), ("Red</s>", True)]


def test_alpaca_system_prompt_replaces_the_first_line_and_turns_repeat_blocks(tok):
    t = tok()
    template = prepared(t, "alpaca")
    segs = render([Message("user", "Q1"), Message("assistant", "A1"), Message("user", "Q2"), Message("assistant", "A2")],
                  t, template, system_prompt="You are terse.")
    block = "You are terse.\n\n### Instruction:\n{}\n\n### Response:\n"
    assert texts(segs) == [(block.format("Q1"), False), ("A1</s>", True),
                           ("\n\n" + block.format("Q2"), False), ("A2</s>", True)]


def test_chatml_and_llama3_text(tok):
    t = tok("qwen2")
    chat = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello")]
    assert texts(render(chat, t, prepared(t, "chatml"))) == [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", False),
        ("Hello<|im_end|>", True)]
    t = tok("qwen2")
    assert texts(render(chat, t, prepared(t, "llama3"))) == [
        ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
         False),
        ("Hello<|eot_id|>", True)]


# ------------------------------------------------------------------ resolve_template

def test_resolve_template_sources(tok, tmp_path):
    t = tok()
    assert resolve_template("chatml", t) == NAMED["chatml"]
    with pytest.raises(ConfigError, match=r"data.template: the tokenizer has no chat template; set data.template "
                                          r"to one of alpaca, chatml, llama3"):
        resolve_template(None, t)
    t.chat_template = STANDARD_CHATML
    assert resolve_template(None, t) == STANDARD_CHATML
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}", encoding="utf-8")
    assert resolve_template(str(path), t) == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name, message", [
    ("chatlm", r'unknown template .chatlm. \(did you mean "chatml"\?\)'),
    ("missing.jinja", r"data.template: no such template file missing.jinja"),
])
def test_resolve_template_errors(tok, name, message):
    with pytest.raises(ConfigError, match=message):
        resolve_template(name, tok())


def test_jinja_syntax_error_names_file_and_line(tok, tmp_path):
    path = tmp_path / "broken.jinja"
    path.write_text("line one\n{% for m in messages %}{{ m['content'] }\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}:2: data.template: Jinja syntax error"):
        resolve_template(str(path), tok())


# ------------------------------------------------------------------ prepare_tokenizer, end of turn

def test_prepare_adds_missing_markers_as_single_special_tokens(tok):
    t = tok("llama")
    size = len(t)
    new = prepare_tokenizer(t, NAMED["chatml"])
    assert len(new) == 2 and len(t) == size + 2 and sorted(new) == [size, size + 1]
    assert t.convert_ids_to_tokens(new) == ["<|im_start|>", "<|im_end|>"]
    assert t("<|im_start|>user", add_special_tokens=False).input_ids[0] == new[0]
    assert t.decode(t("x<|im_end|>").input_ids, skip_special_tokens=True) == "x"  # special, not text
    assert t.chat_template == NAMED["chatml"]
    assert prepare_tokenizer(t, NAMED["chatml"]) == []  # already there: nothing new, no resize needed
    assert len(prepare_tokenizer(t, NAMED["llama3"])) == 4


def test_prepare_pad_token_reuses_unk_then_eos_then_adds_one(tok):
    from tunewright.lab.tiny import train_tokenizer

    t = tok("llama")  # has unk, no pad
    prepare_tokenizer(t, NAMED["alpaca"])
    assert t.pad_token == "<unk>"
    gpt2 = train_tokenizer(arch="gpt2")  # eos only
    assert gpt2.pad_token is None and gpt2.unk_token is None
    assert prepare_tokenizer(gpt2, NAMED["alpaca"]) == []
    assert gpt2.pad_token == gpt2.eos_token
    bare = train_tokenizer(arch="gpt2")
    bare.eos_token = None
    bare.bos_token = None
    new = prepare_tokenizer(bare, NAMED["chatml"])
    assert bare.pad_token == "<|pad|>" and bare.pad_token_id in new and len(new) == 3


@pytest.mark.parametrize("name, expected", [("chatml", ["<|im_end|>", "</s>"]), ("llama3", ["<|eot_id|>", "</s>"]),
                                            ("alpaca", ["</s>"])])
def test_end_of_turn_ids(tok, name, expected):
    t = tok("llama")
    template = prepared(t, name)
    assert end_of_turn_ids(t, template) == t.convert_tokens_to_ids(expected)
    assert t.end_of_turn_tokens == expected  # recorded by prepare_tokenizer


def test_end_of_turn_of_a_tokenizer_template_with_trailing_newline(tok):
    t = tok("qwen2")
    t.add_special_tokens({"extra_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    assert end_of_turn_ids(t, STANDARD_CHATML) == t.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])


# ------------------------------------------------------------------ which turns train

CHAT = [Message("user", "Q1"), Message("assistant", "A1"), Message("user", "Q2"), Message("assistant", "A2")]


def trained(segments):
    return [s.text for s in segments if s.train]


def test_train_on_turns_flags_and_inputs(tok):
    t = tok("qwen2")
    template = prepared(t, "chatml")
    assert trained(render(CHAT, t, template)) == ["A1<|im_end|>", "A2<|im_end|>"]
    assert trained(render(CHAT, t, template, train_on_turns="last")) == ["A2<|im_end|>"]
    flagged = [CHAT[0], Message("assistant", "A1", train=True), CHAT[2], Message("assistant", "A2", train=False)]
    assert trained(render(flagged, t, template, train_on_turns="last")) == ["A1<|im_end|>"]  # flags win
    everything = render(CHAT, t, template, train_on_inputs=True)
    assert all(s.train for s in everything) and len(everything) == 4
    dicts = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1", "train": False}]
    assert trained(render(dicts, t, template)) == []


def test_alpaca_history_outputs_train_as_train_on_turns_says(tok):
    from tunewright.config import DataSource
    from tunewright.data.formats import format_row

    row = {"instruction": "Q2", "output": "A2", "history": [["Q1", "A1"]]}
    messages = format_row(row, 1, DataSource(path="d.jsonl", format="alpaca")).messages
    t = tok("qwen2")
    template = prepared(t, "chatml")
    assert trained(render(messages, t, template)) == ["A1<|im_end|>", "A2<|im_end|>"]  # default all: trained
    assert trained(render(messages, t, template, train_on_turns="last")) == ["A2<|im_end|>"]


def test_segments_join_to_the_full_rendering_and_prompt_ends_with_header(tok):
    t = tok("qwen2")
    template = prepared(t, "chatml")
    full = t.apply_chat_template([{"role": m.role, "content": m.content} for m in CHAT], tokenize=False)
    assert "".join(s.text for s in render(CHAT, t, template)) == full
    prompt = render(CHAT[:3], t, template, add_generation_prompt=True)
    assert "".join(s.text for s in prompt).endswith("<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n")
    assert texts(prompt)[:2] == texts(render(CHAT, t, template))[:2]  # same segments as the training prefix


def test_system_prompt_only_added_when_absent(tok):
    t = tok("qwen2")
    template = prepared(t, "chatml")
    added = "".join(s.text for s in render(CHAT[:2], t, template, system_prompt="SYS"))
    assert added.startswith("<|im_start|>system\nSYS<|im_end|>")
    kept = "".join(s.text for s in render([Message("system", "OWN"), *CHAT[:2]], t, template, system_prompt="SYS"))
    assert "OWN" in kept and "SYS" not in kept


def test_newline_after_end_of_turn_is_not_trained(tok):
    t = tok("qwen2")
    t.add_special_tokens({"extra_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    segs = render(CHAT[:2], t, STANDARD_CHATML)
    assert texts(segs)[1:] == [("A1<|im_end|>", True), ("\n", False)]


def test_reply_opening_the_conversation_keeps_its_header_untrained(tok):
    t = tok("qwen2")
    template = prepared(t, "chatml")
    assert texts(render([Message("assistant", "Hi")], t, template)) == [("<|im_start|>assistant\n", False),
                                                                       ("Hi<|im_end|>", True)]


def test_template_that_rewrites_earlier_turns_is_refused(tok):
    t = tok("qwen2")
    counting = "{{ messages | length }}{% for m in messages %}|{{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError, match="data.template: the chat template is not prefix-stable"):
        render(CHAT, t, counting)


def test_template_rejecting_a_conversation_is_a_data_error(tok):
    t = tok("llama")
    template = prepared(t, "alpaca")
    with pytest.raises(DataError, match="messages: the chat template rejected the conversation: the alpaca "
                                        "template has no role tool"):
        render([Message("user", "Q"), Message("tool", "x"), Message("assistant", "A")], t, template)


def test_a_chat_template_without_context_still_shows_alpacas_input(tiny_model_dir):
    """A tokenizer's own chat template knows nothing of alpaca's `input`: it must not vanish."""
    from transformers import AutoTokenizer

    from tunewright.data.templates import render
    from tunewright.data.types import Message

    tok = AutoTokenizer.from_pretrained(tiny_model_dir("qwen2"))
    own = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    segments = render([Message("user", "Extract the person.", context="Ada is 36."), Message("assistant", "{}")],
                      tok, own)
    prompt = "".join(s.text for s in segments if not s.train)
    assert "Extract the person.\n\nAda is 36." in prompt


def test_loss_on_a_prompt_message_is_refused_not_ignored(tiny_model_dir):
    from transformers import AutoTokenizer

    from tunewright.data.templates import NAMED, render
    from tunewright.data.types import Message
    from tunewright.errors import DataError

    tok = AutoTokenizer.from_pretrained(tiny_model_dir("qwen2"))
    with pytest.raises(DataError, match=r"messages\[0\].train: only assistant messages can carry loss"):
        render([Message("user", "learn me", train=True), Message("assistant", "ok")], tok, NAMED["chatml"])
