"""Every row format: what a good row becomes, and the exact `file:line: field: reason` of bad ones."""

from __future__ import annotations

import pytest

from tunewright.config import DataSource
from tunewright.data.formats import FORMATS, format_row
from tunewright.data.types import Example, Message, Segment
from tunewright.errors import ConfigError, DataError


def _src(fmt: str, **kw) -> DataSource:
    return DataSource(path="d.jsonl", format=fmt, **kw)


def _error(row: dict, src: DataSource, line: int = 7) -> str:
    with pytest.raises(DataError) as info:
        format_row(row, line, src)
    assert (info.value.file, info.value.line) == ("d.jsonl", line)
    return str(info.value)


def test_registry_holds_the_documented_names_and_suggests():
    assert FORMATS.names() == ["alpaca", "classification", "messages", "pairs", "preference", "prompt_completion",
                              "ranked", "sharegpt", "tabular", "text", "unpaired"]
    # the config refuses it first; the registry is the second line for sources built without validation
    with pytest.raises(ValueError, match=r"unknown data format 'sharegtp' \(did you mean \"sharegpt\"\?\)"):
        _src("sharegtp")
    with pytest.raises(ConfigError, match=r"unknown data format 'sharegtp' \(did you mean \"sharegpt\"\?\)"):
        format_row({}, 1, DataSource.model_construct(path="d.jsonl", format="sharegtp", columns={}, roles={}))


# ---------------------------------------------------------------- alpaca

def test_alpaca_with_and_without_input():
    ex = format_row({"instruction": "Add", "input": "2 and 3", "output": "5"}, 3, _src("alpaca"))
    assert ex == Example("d.jsonl", 3, messages=[Message("user", "Add", context="2 and 3"), Message("assistant", "5")])
    ex = format_row({"instruction": "Hi", "input": "", "output": "Hello"}, 4, _src("alpaca"))
    assert ex.messages[0] == Message("user", "Hi", context=None)
    assert format_row({"instruction": "Hi", "output": "Hello"}, 5, _src("alpaca")).messages[0].context is None


def test_alpaca_system_column_becomes_first_turn():
    ex = format_row({"instruction": "Hi", "output": "Yo", "system": "Be brief."}, 1, _src("alpaca"))
    assert [m.role for m in ex.messages] == ["system", "user", "assistant"]


def test_alpaca_column_mapping():
    src = _src("alpaca", columns={"instruction": "question", "output": "answer"})
    ex = format_row({"question": "Why?", "answer": "Because."}, 1, src)
    assert [(m.role, m.content) for m in ex.messages] == [("user", "Why?"), ("assistant", "Because.")]


@pytest.mark.parametrize("row, message", [
    ({"output": "x"}, "d.jsonl:7: instruction: missing; columns: output (map another with columns: {instruction: <column>})"),
    ({"instruction": "  ", "output": "x"}, "d.jsonl:7: instruction: empty"),
    ({"instruction": "a", "output": 3}, "d.jsonl:7: output: expected a string, got a number"),
    ({"instruction": "a", "input": ["x"], "output": "b"}, "d.jsonl:7: input: expected a string, got a list"),
    ({"instruction": "a", "outptu": "b"}, 'd.jsonl:7: output: missing (did you mean "outptu"?); columns: instruction, outptu '
                                          "(map another with columns: {output: <column>})"),
])
def test_alpaca_bad_rows(row, message):
    assert _error(row, _src("alpaca")) == message


def test_alpaca_history_becomes_earlier_turns_after_the_system_turn():
    row = {"instruction": "And 4 more?", "output": "9", "system": "Be brief.",
           "history": [["What is 2 + 3?", "5"], ["Double it.", "10"]]}
    ex = format_row(row, 1, _src("alpaca"))
    assert ex.messages == [Message("system", "Be brief."), Message("user", "What is 2 + 3?"), Message("assistant", "5"),
                           Message("user", "Double it."), Message("assistant", "10"),
                           Message("user", "And 4 more?"), Message("assistant", "9")]
    # train=None: the earlier outputs follow data.train_on_turns (default all: trained)
    assert all(m.train is None for m in ex.messages)
    assert format_row({**row, "history": []}, 1, _src("alpaca")).messages[1].content == "And 4 more?"
    mapped = format_row({"instruction": "b", "output": "c", "turns": [["a", "z"]]}, 1,
                        _src("alpaca", columns={"history": "turns"}))
    assert [m.content for m in mapped.messages] == ["a", "z", "b", "c"]


@pytest.mark.parametrize("history, message", [
    ("earlier", "d.jsonl:7: history: expected a list of [instruction, output] pairs, got a string"),
    ([["a", "b", "c"]], "d.jsonl:7: history[0]: expected a pair [instruction, output], got 3 items"),
    ([["a", "b"], {"q": "a"}], "d.jsonl:7: history[1]: expected a pair [instruction, output], got an object"),
    ([["a", 5]], "d.jsonl:7: history[0][1]: expected a string, got a number"),
    ([[" ", "b"]], "d.jsonl:7: history[0][0]: empty"),
])
def test_alpaca_bad_history(history, message):
    assert _error({"instruction": "a", "output": "b", "history": history}, _src("alpaca")) == message


def test_mapped_column_missing_names_both():
    src = _src("alpaca", columns={"instruction": "question"})
    assert _error({"prompt": "q", "output": "a"}, src) == (
        "d.jsonl:7: question: column 'question' (mapped from instruction) is not in the row; columns: prompt, output")


def test_mapping_an_unknown_field_is_a_config_error():
    with pytest.raises(ConfigError, match=r"alpaca has no field 'instrution' \(did you mean \"instruction\"\?\)"):
        format_row({"instruction": "a", "output": "b"}, 1, _src("alpaca", columns={"instrution": "q"}))


# ---------------------------------------------------------------- messages

def test_messages_keeps_turns_and_train_flags():
    row = {"messages": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello", "train": False},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye!", "train": True},
    ]}
    ex = format_row(row, 2, _src("messages"))
    assert ex.segments is None
    assert ex.messages == [Message("system", "Be kind."), Message("user", "Hi"), Message("assistant", "Hello", train=False),
                           Message("user", "Bye"), Message("assistant", "Bye!", train=True)]


def test_messages_role_mapping_and_column_mapping():
    src = _src("messages", columns={"messages": "chat"}, roles={"bot": "assistant", "human": "user"})
    ex = format_row({"chat": [{"role": "human", "content": "Hi"}, {"role": "bot", "content": "Yo"}]}, 1, src)
    assert [m.role for m in ex.messages] == ["user", "assistant"]


def test_messages_null_train_flag_means_unset():
    # `datasets` fills a struct field missing in some rows with None
    ex = format_row({"messages": [{"role": "user", "content": "a", "train": None},
                                  {"role": "assistant", "content": "b", "train": None}]}, 1, _src("messages"))
    assert [m.train for m in ex.messages] == [None, None]


U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}


@pytest.mark.parametrize("turns, message", [
    ([U, A, U, {"role": "asistant", "content": "x"}],
     "d.jsonl:7: messages[3].role: unknown role 'asistant' (did you mean \"assistant\"?); known: system, user, "
     "assistant (add a name with roles: {<name>: <role>})"),
    ([U, {"role": "system", "content": "s"}, A], "d.jsonl:7: messages[1].role: a system turn may only come first"),
    ([U], "d.jsonl:7: messages: no assistant turn (nothing to train on)"),
    ([U, {"role": "assistant", "content": ["a"]}], "d.jsonl:7: messages[1].content: expected a string, got a list"),
    ([U, {"role": "assistant"}], "d.jsonl:7: messages[1].content: missing"),
    ([U, {"content": "a"}], "d.jsonl:7: messages[1].role: missing"),
    ([U, {**A, "train": "yes"}], "d.jsonl:7: messages[1].train: expected true or false, got 'yes'"),
    ([U, {**A, "content": " "}], "d.jsonl:7: messages[1].content: empty assistant reply"),
    ([U, "hello"], "d.jsonl:7: messages[1]: expected an object with role and content, got a string"),
    ([], "d.jsonl:7: messages: no turns"),
    ("hi", "d.jsonl:7: messages: expected a list of turns, got a string"),
])
def test_messages_bad_rows(turns, message):
    assert _error({"messages": turns}, _src("messages")) == message


def test_roles_must_map_to_known_roles():
    with pytest.raises(ConfigError, match=r"roles: 'bot' maps to 'assistent' \(did you mean \"assistant\"\?\)"):
        format_row({"messages": [U, A]}, 1, _src("messages", roles={"bot": "assistent"}))


# ---------------------------------------------------------------- sharegpt

def test_sharegpt_default_and_extra_roles():
    row = {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"},
                             {"from": "bot", "value": "a"}]}
    ex = format_row(row, 1, _src("sharegpt", roles={"bot": "assistant"}))
    assert ex.messages == [Message("system", "s"), Message("user", "q"), Message("assistant", "a")]


def test_sharegpt_bad_rows_name_its_own_keys():
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}
    assert _error(row, _src("sharegpt")).startswith("d.jsonl:7: conversations[1].from: unknown role 'bot'; known: human, gpt")
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": None}]}
    assert _error(row, _src("sharegpt")) == "d.jsonl:7: conversations[1].value: expected a string, got null"


# ---------------------------------------------------------------- prompt_completion

def test_prompt_completion_strings_become_segments():
    ex = format_row({"prompt": "2+2=", "completion": "4"}, 1, _src("prompt_completion"))
    assert ex.messages is None and ex.segments == [Segment("2+2=", False), Segment("4", True)]


def test_prompt_completion_conversational():
    row = {"prompt": [{"role": "system", "content": "s"}, U, A, U],
           "completion": [{"role": "assistant", "content": "done"}]}
    ex = format_row(row, 1, _src("prompt_completion"))
    assert [(m.role, m.content, m.train) for m in ex.messages] == [
        ("system", "s", False), ("user", "q", False), ("assistant", "a", False), ("user", "q", False),
        ("assistant", "done", True)]


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "completion": ""}, "d.jsonl:7: completion: empty"),
    ({"prompt": "p"}, "d.jsonl:7: completion: missing; columns: prompt (map another with columns: {completion: <column>})"),
    ({"prompt": [U], "completion": "a"},
     "d.jsonl:7: prompt: a message list while the other field is not; give both as strings or both as message lists"),
    ({"prompt": [U], "completion": [U]}, "d.jsonl:7: completion[0].role: completion turns must be assistant, got 'user'"),
])
def test_prompt_completion_bad_rows(row, message):
    assert _error(row, _src("prompt_completion")) == message


# ---------------------------------------------------------------- text

def test_text_and_mapping():
    ex = format_row({"body": "Once upon a time."}, 9, _src("text", columns={"text": "body"}))
    assert ex == Example("d.jsonl", 9, segments=[Segment("Once upon a time.", True)])
    assert _error({"text": 5}, _src("text")) == "d.jsonl:7: text: expected a string, got a number"


# ---------------------------------------------------------------- classification

def test_classification_rows_are_a_text_and_its_label():
    ex = format_row({"text": "Great value.", "label": "positive"}, 2, _src("classification"))
    assert ex.messages == [Message("user", "Great value."), Message("assistant", "positive")]
    ex = format_row({"premise": "A", "hypothesis": "B", "label": 1}, 3,
                    _src("classification", columns={"text": "premise", "text_pair": "hypothesis"}))
    assert ex.messages == [Message("user", "A", context="B"), Message("assistant", "1")]
    assert format_row({"text": "x", "label": ["sports", "business"]}, 4, _src("classification")).messages[1].content \
        == "sports, business"
    # the lab's recommendation rows: the prompt is the text
    rec = {"user": "Ada", "prompt": "The user liked X. Will the user like Y?", "label": "Yes", "candidate": "Y"}
    assert format_row(rec, 5, _src("classification", columns={"text": "prompt"})).messages[0].content.startswith("The")


@pytest.mark.parametrize("row, message", [
    ({"label": "a"}, "d.jsonl:7: text: missing"),
    ({"text": " ", "label": "a"}, "d.jsonl:7: text: empty"),
    ({"text": "x", "text_pair": 3, "label": "a"}, "d.jsonl:7: text_pair: expected a string, got a number"),
    ({"text": "x"}, "d.jsonl:7: label: missing"),
    ({"text": "x", "label": True}, "d.jsonl:7: label: expected a class name, a number or a list of class names, got a boolean"),
    ({"text": "x", "label": []}, "d.jsonl:7: label: expected a class name, a number or a list of class names, got empty"),
    ({"text": "x", "label": ["a", "b,c"]}, "d.jsonl:7: label: every name of a label list must be a non-empty string"),
    ({"text": "x", "label": float("nan")}, "d.jsonl:7: label: nan is not a finite number"),
])
def test_classification_bad_rows(row, message):
    assert _error(row, _src("classification")).startswith(message)
