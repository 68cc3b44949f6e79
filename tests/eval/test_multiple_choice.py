"""The MMLU-style harness: rows validated with file:line: field, k-shot prompts that never show
the row itself, exact accuracy from a hand-made model whose logits we set, length normalization,
and scores equal to a brute-force forward on a tiny model."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError, DataError
from tunewright.eval.generate import prompt_ids
from tunewright.eval.multiple_choice import Question, build_prompt, evaluate_multiple_choice, load_questions, \
    select_shots
from tunewright.models.load import load_model, load_tokenizer

ROWS = [  # answers: C A C in physics, B C D in history -> a model that always says C gets 3/6
    {"question": "What is two plus three?", "choices": ["four", "six", "five", "seven"], "answer": 2,
     "subject": "physics"},
    {"question": "Count from one to three.", "choices": ["one two three", "three", "two", "one"], "answer": "A",
     "subject": "physics"},
    {"question": "Which is heavier?", "choices": ["air", "a feather", "iron", "light"], "answer": "c",
     "subject": "physics"},
    {"question": "The capital of France is", "choices": ["Rome", "Paris", "Madrid", "London"], "answer": 1,
     "subject": "history"},
    {"question": "The capital of Italy is", "choices": ["Paris", "Madrid", "Rome", "London"], "answer": 2,
     "subject": "history"},
    {"question": "The capital of Spain is", "choices": ["Rome", "Paris", "London", "Madrid"], "answer": "D",
     "subject": "history"},
]


@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    path = tiny_model_dir("llama")
    return load_model(ModelConfig(name=path)), load_tokenizer(ModelConfig(name=path))


class UnigramModel(torch.nn.Module):
    """A hand-made "model": the same logits at every position, so log p(token) is a fixed table.
    Its forward takes no logits_to_keep, like some older models."""

    def __init__(self, logits: torch.Tensor, max_positions: int = 4096):
        super().__init__()
        self.logits = torch.nn.Parameter(logits, requires_grad=False)
        self.config = SimpleNamespace(is_encoder_decoder=False, max_position_embeddings=max_positions)
        self.seen: list[list[int]] = []

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        self.seen += [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def token_logprobs(model: UnigramModel) -> list[float]:
    return torch.log_softmax(model.logits.double(), -1).tolist()


# ------------------------------------------------------------------ rows

def write_jsonl(path, rows) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_rows_load_with_index_or_letter_answers(tmp_path):
    questions = load_questions(write_jsonl(tmp_path / "mmlu.jsonl", ROWS[:3] + [""] + ROWS[3:]))
    assert [q.answer for q in questions] == [2, 0, 2, 1, 2, 3]
    assert [q.line for q in questions] == [1, 2, 3, 5, 6, 7]  # blank line skipped, lines kept
    assert questions[0].subject == "physics" and questions[0].source.endswith("mmlu.jsonl")


@pytest.mark.parametrize("row, where", [
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, r":2: answer: 2 is out of range for 2 choices"),
    ({"question": "q", "choices": ["a", "b"], "answer": "C"}, r":2: answer: 'C' is out of range"),
    ({"question": "q", "choices": ["a", "b"], "answer": True}, r":2: answer: True is neither"),
    ({"question": "q", "choices": ["a", "b"]}, r":2: answer: missing"),
    ({"question": "q", "answer": 0}, r":2: choices: missing"),
    ({"question": "q", "choices": ["a"], "answer": 0}, r":2: choices: must be a list of 2 to 26"),
    ({"question": "q", "choices": ["a", ""], "answer": 0}, r":2: choices: choice 1 must be a non-empty string"),
    ({"choices": ["a", "b"], "answer": 0}, r":2: question: missing"),
    ({"question": "q", "choices": ["a", "b"], "answer": 0, "subject": 3}, r":2: subject: must be a string"),
    ("{not json", r":2: invalid JSON"),
])
def test_bad_rows_raise_data_error_with_file_line_and_field(tmp_path, row, where):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], row])
    with pytest.raises(DataError, match=r"bad\.jsonl" + where):
        load_questions(path)


def test_rows_given_as_dicts_are_checked_too():
    with pytest.raises(DataError, match=r"<rows>:3: answer"):
        load_questions([ROWS[0], ROWS[1], {**ROWS[2], "answer": 9}])
    with pytest.raises(DataError, match="file not found"):
        load_questions("/nonexistent/mmlu.jsonl")


# ------------------------------------------------------------------ prompts and shots

def test_prompt_format_with_one_shot():
    q, shot = load_questions(ROWS[3:5])
    assert build_prompt(q, [shot]) == (
        "The following are multiple choice questions (with answers) about history.\n\n"
        "The capital of Italy is\nA. Paris\nB. Madrid\nC. Rome\nD. London\nAnswer: C\n\n"
        "The capital of France is\nA. Rome\nB. Paris\nC. Madrid\nD. London\nAnswer:")
    assert build_prompt(q, [shot], mode="text").split("\n\n")[1].endswith("Answer: Rome")
    plain = Question("2+2?", ["3", "4"], 1)
    assert build_prompt(plain, []) == "2+2?\nA. 3\nB. 4\nAnswer:"  # no subject, no header


def test_shots_never_include_the_row_and_prefer_its_subject():
    questions = load_questions(ROWS)
    for q in questions:
        shots = select_shots(q, questions, 3)
        assert q not in shots and len(shots) == 3
        assert all(s.question != q.question for s in shots)
    # physics row 0: the other two physics rows first, then the first history row
    assert [s.line for s in select_shots(questions[0], questions, 3)] == [2, 3, 4]
    assert [s.line for s in select_shots(questions[4], questions, 2)] == [4, 6]
    # a copy of the row in the dev pool (same question and choices) would leak the answer
    dev = load_questions([ROWS[0], ROWS[1]], "<dev>")
    assert [s.line for s in select_shots(questions[0], dev, 2)] == [2]
    assert select_shots(questions[0], questions, 0) == []


# ------------------------------------------------------------------ a model whose logits we set

def test_letter_mode_accuracy_is_exact_with_a_model_that_always_says_c(llama):
    _, tok = llama
    c = tok(" C", add_special_tokens=False)["input_ids"][-1]
    logits = torch.zeros(len(tok))
    logits[c] = 5.0
    model = UnigramModel(logits)
    result = evaluate_multiple_choice(model, tok, ROWS)
    assert [e["predicted"] for e in result["per_example"]] == [2] * 6
    assert result["accuracy"] == 0.5 and result["n"] == 6
    assert result["per_subject"] == {"history": {"accuracy": pytest.approx(1 / 3), "n": 3},
                                     "physics": {"accuracy": pytest.approx(2 / 3), "n": 3}}
    assert result["fewer_shots"] == 0 and result["truncated"] == 0


def test_text_mode_normalizations_pick_what_the_log_likelihoods_say(llama):
    _, tok = llama
    torch.manual_seed(3)
    model = UnigramModel(torch.randn(len(tok)) * 2)
    table = token_logprobs(model)
    picks = {}
    for normalize in (None, "tokens", "chars"):
        result = evaluate_multiple_choice(model, tok, ROWS, mode="text", normalize=normalize)
        expected = []
        for row, example in zip(ROWS, result["per_example"]):
            scores = []
            for choice in row["choices"]:
                ids = tok(" " + choice, add_special_tokens=False)["input_ids"]
                ll = sum(table[i] for i in ids)
                scores.append({None: ll, "tokens": ll / len(ids), "chars": ll / len(choice)}[normalize])
            assert example["scores"] == pytest.approx(scores, abs=1e-4)
            best = max(scores)
            assert sorted(scores)[-2] < best - 1e-3  # no near-tie: the expected pick is unambiguous
            expected.append(scores.index(best))
        picks[normalize] = expected
        assert [e["predicted"] for e in result["per_example"]] == expected
        answers = [q.answer for q in load_questions(ROWS)]
        assert result["accuracy"] == sum(p == a for p, a in zip(expected, answers)) / 6
    # the three rules really choose differently on these rows
    assert picks[None] != picks["tokens"] and picks[None] != picks["chars"] and picks["tokens"] != picks["chars"]


def test_k_shot_prompts_hold_other_rows_and_long_prompts_lose_shots(llama):
    _, tok = llama
    model = UnigramModel(torch.zeros(len(tok)))
    result = evaluate_multiple_choice(model, tok, ROWS, k_shot=2)
    assert [e["shots"] for e in result["per_example"]] == [2] * 6 and result["fewer_shots"] == 0
    questions = load_questions(ROWS)
    # every sequence the model saw is a row's prompt with two shots, then " A".." D" but its last token
    prompts = {tuple(prompt_ids(build_prompt(q, select_shots(q, questions, 2)), tok, None)) for q in questions}
    space = tok(" A", add_special_tokens=False)["input_ids"][:-1]
    assert {tuple(s[:len(s) - len(space)]) for s in model.seen} == prompts
    assert len(model.seen) == 6 * 4 and all(s[len(s) - len(space):] == space for s in model.seen)
    # a limit that fits a row with no shot but not with two: shots dropped (and counted), never the row cut
    bare = max(len(prompt_ids(build_prompt(q, []), tok, None)) for q in questions)
    small = evaluate_multiple_choice(model, tok, ROWS, k_shot=2, max_length=bare + 1)
    assert small["fewer_shots"] == 6 and small["truncated"] == 0
    assert all(e["shots"] < 2 for e in small["per_example"])


def test_shots_come_from_the_dev_file_when_given(llama, tmp_path):
    _, tok = llama
    dev = write_jsonl(tmp_path / "dev.jsonl", [{**ROWS[0], "question": "Dev physics?"},
                                               {**ROWS[3], "question": "Dev history?"}])
    model = UnigramModel(torch.zeros(len(tok)))
    result = evaluate_multiple_choice(model, tok, ROWS, k_shot=1, dev=dev)
    texts = [tok.decode(s) for s in model.seen]
    assert all("Dev" in t for t in texts)
    for row in ROWS:  # each row's one shot is its subject's dev question
        prompt = next(t for t in texts if row["question"] in t)
        assert ("Dev physics?" in prompt) == (row["subject"] == "physics")
    assert result["fewer_shots"] == 0
    assert evaluate_multiple_choice(model, tok, ROWS, k_shot=3, dev=dev)["fewer_shots"] == 6


def test_a_template_renders_the_prompt_as_a_user_turn(tiny_model_dir):
    from tunewright.data.templates import NAMED, prepare_tokenizer

    tok = load_tokenizer(ModelConfig(name=tiny_model_dir("llama")))
    prepare_tokenizer(tok, NAMED["alpaca"])
    model = UnigramModel(torch.zeros(len(tok)))
    evaluate_multiple_choice(model, tok, ROWS[:1], template=tok.chat_template)
    expected = prompt_ids(build_prompt(load_questions(ROWS[:1])[0], []), tok, tok.chat_template)
    assert model.seen[0][:len(expected)] == expected and "### Response:" in tok.decode(expected)


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "letters"}, 'did you mean "letter"'),
    ({"mode": "text", "normalize": "char"}, 'did you mean "chars"'),
    ({"normalize": "tokens"}, "applies to modes 'text' and 'cloze'"),
    ({"k_shot": -1}, "k_shot"),
])
def test_bad_settings_raise_config_error(llama, kwargs, match):
    _, tok = llama
    with pytest.raises(ConfigError, match=match):
        evaluate_multiple_choice(UnigramModel(torch.zeros(len(tok))), tok, ROWS, **kwargs)


# ------------------------------------------------------------------ a real (tiny) model

def test_cloze_prompts_do_not_list_the_choices_and_shots_answer_in_text():
    q = load_questions([ROWS[0]])[0]
    shot = load_questions([{"question": "Capital of Italy?", "choices": ["Paris", "Rome"], "answer": 1}])[0]
    prompt = build_prompt(q, [shot], mode="cloze")
    assert prompt.split("\n\n")[1] == "Capital of Italy?\nAnswer: Rome"
    assert prompt.endswith(q.question + "\nAnswer:") and not any(f"\n{x}. " in prompt for x in "ABCD")


def test_byte_normalization_divides_by_utf8_bytes(llama):
    _, tok = llama
    rows = [{"question": "Which word?", "choices": ["café", "日本", "x"], "answer": 0}]
    model = UnigramModel(torch.randn(len(tok), generator=torch.Generator().manual_seed(5)))
    table = token_logprobs(model)
    for normalize, size in (("bytes", lambda c: len(c.encode())), ("chars", len)):
        got = evaluate_multiple_choice(model, tok, rows, mode="cloze", normalize=normalize)["per_example"][0]
        want = [sum(table[i] for i in tok(" " + c, add_special_tokens=False)["input_ids"]) / size(c)
                for c in rows[0]["choices"]]
        assert got["scores"] == pytest.approx(want, abs=1e-4)
    assert len("日本".encode()) == 6 != len("日本")  # the two rules differ on this row


@pytest.mark.parametrize("mode, normalize, k_shot", [("letter", None, 0), ("text", "tokens", 1), ("cloze", "bytes", 1)])
def test_scores_equal_brute_force_on_a_tiny_model(llama, mode, normalize, k_shot):
    model, tok = llama
    result = evaluate_multiple_choice(model, tok, ROWS, k_shot=k_shot, mode=mode, normalize=normalize, batch_size=3)
    questions = load_questions(ROWS)
    for q, example in zip(questions, result["per_example"]):
        context = prompt_ids(build_prompt(q, select_shots(q, questions, k_shot), mode), tok, None)
        scores = []
        for k, choice in enumerate(q.choices):
            cont = tok(" " + ("ABCD"[k] if mode == "letter" else choice), add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([context + cont])).logits[0].float(), -1)
            ll = sum(logprobs[len(context) - 1 + t, i].item() for t, i in enumerate(cont))
            scores.append({None: ll, "tokens": ll / len(cont), "bytes": ll / len(choice.encode())}[normalize])
        assert example["scores"] == pytest.approx(scores, abs=1e-4)
        assert example["predicted"] == max(range(len(scores)), key=scores.__getitem__)
        assert all(math.isfinite(s) for s in scores)
    assert result["accuracy"] == pytest.approx(sum(e["predicted"] == e["answer"] for e in result["per_example"]) / 6)
