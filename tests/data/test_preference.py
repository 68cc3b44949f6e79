"""Preference formats (preference, ranked, unpaired) and how pair objectives encode them: the prompt
tokens are generate's, the same in chosen and rejected; over-long prompts are cut from the left;
identical pairs, short answers and cut-away answers are dropped and counted; bad rows name
file:line: field: reason; packing is refused; the lab's preference export trains as written."""

from __future__ import annotations

import json
import math

import pytest
from transformers import AutoTokenizer

import tunewright
from tunewright.config import DataConfig, DataSource, load_config
from tunewright.data.mixture import load_examples
from tunewright.data.templates import NAMED, prepare_tokenizer
from tunewright.data.tokenize import tokenize_examples
from tunewright.errors import ConfigError, DataError
from tunewright.eval.generate import prompt_ids
from tunewright.lab.export import export_task
from tunewright.objectives import OBJECTIVES, check_fit, dpo, kto
from tunewright.training.logging import read_metrics

PROMPT_TURNS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6 x 7?"}]


def _load(tmp_path, rows, fmt, **data):
    path = tmp_path / f"{fmt}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = DataSource(path=str(path), format=fmt)
    return load_examples(src, DataConfig(datasets=[src], **data))[0], str(path)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    t = AutoTokenizer.from_pretrained(tiny_model_dir("llama"))
    prepare_tokenizer(t, NAMED["chatml"])
    return t


def _cfg(**data):
    return DataConfig(datasets=[DataSource(path="x.jsonl", format="preference")], **data)


def test_preference_rows_strings_and_message_lists(tmp_path):
    rows = [{"prompt": "What is 6 x 7?", "chosen": "42", "rejected": "41"},
            {"prompt": PROMPT_TURNS, "chosen": [{"role": "assistant", "content": "42"}],
             "rejected": [{"content": "It is 41."}]}]
    (a, b), _ = _load(tmp_path, rows, "preference")
    assert [(m.role, m.content) for m in a.messages] == [("user", "What is 6 x 7?")]
    assert [[(m.role, m.content) for m in r] for r in a.responses] == [[("assistant", "42")], [("assistant", "41")]]
    assert [m.role for m in b.messages] == ["system", "user"] and b.responses[1][0].content == "It is 41."
    assert a.label is None and all(m.train is False for m in b.messages)


def test_ranked_expands_to_every_ordered_pair_best_first(tmp_path):
    (*pairs,), _ = _load(tmp_path, [{"prompt": "p", "responses": ["best", "middle", "worst"]}], "ranked")
    got = [(ex.responses[0][0].content, ex.responses[1][0].content) for ex in pairs]
    assert got == [("best", "middle"), ("best", "worst"), ("middle", "worst")]
    assert all(ex.line == 1 for ex in pairs)


def test_unpaired_rows_carry_their_label(tmp_path):
    rows = [{"prompt": "p", "completion": "good", "label": True}, {"prompt": "p", "completion": "bad", "label": False}]
    examples, _ = _load(tmp_path, rows, "unpaired")
    assert [(ex.responses[0][0].content, ex.label) for ex in examples] == [("good", True), ("bad", False)]


@pytest.mark.parametrize("fmt, row, field, reason", [
    ("preference", {"prompt": "p", "chosen": "a"}, "rejected", "missing"),
    ("preference", {"prompt": "p", "chosen": "a", "rejected": 3}, "rejected", "expected a string or a list"),
    ("preference", {"prompt": "p", "chosen": " ", "rejected": "b"}, "chosen", "empty"),
    ("preference", {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                    "chosen": "a", "rejected": "b"}, "prompt[1].role", "ends with an assistant turn"),
    ("preference", {"prompt": "p", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     "chosen[0].role", "must be assistant"),
    ("ranked", {"prompt": "p", "responses": ["only"]}, "responses", "at least 2"),
    ("ranked", {"prompt": "p", "responses": ["a", 5]}, "responses[1]", "expected a string"),
    ("ranked", {"prompt": "p", "responses": "a"}, "responses", "expected a list"),
    ("unpaired", {"prompt": "p", "completion": "a", "label": "yes"}, "label", "expected true or false"),
    ("unpaired", {"prompt": "p", "completion": "a"}, "label", "missing"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, fmt, row, field, reason):
    good = {"preference": {"prompt": "p", "chosen": "a", "rejected": "b"},
            "ranked": {"prompt": "p", "responses": ["a", "b"]},
            "unpaired": {"prompt": "p", "completion": "a", "label": True}}[fmt]
    with pytest.raises(DataError) as err:
        _load(tmp_path, [good, row], fmt)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / (fmt + '.jsonl')}:2: {field}: ") and reason in msg and "\n" not in msg


@pytest.mark.parametrize("prompt, system", [("What is 6 x 7?", None), (PROMPT_TURNS, None),
                                            ("What is 6 x 7?", "Answer in one word.")])
def test_prompt_tokens_are_generates_and_the_same_in_chosen_and_rejected(tmp_path, tok, prompt, system):
    (ex,), _ = _load(tmp_path, [{"prompt": prompt, "chosen": "42", "rejected": "It is forty-one."}], "preference")
    cfg = _cfg(system_prompt=system)
    e = dpo.encode(ex, tok, NAMED["chatml"], cfg)
    batch = dpo.collate([[e]], tok.pad_token_id, False)
    p = e.meta["prompt_len"]
    want = prompt_ids(prompt, tok, NAMED["chatml"], system_prompt=system)
    assert batch["input_ids"][0, :p].tolist() == want == batch["input_ids"][1, :p].tolist()
    # only the answers carry loss; each ends its turn
    for row in (0, 1):
        labels = batch["labels"][row]
        assert (labels[:p] == -100).all() and (labels[p:] != -100).sum() > 0
    assert tok.decode(batch["input_ids"][0, p:][batch["labels"][0, p:] != -100]).startswith("42")


def test_long_prompt_is_cut_from_the_left_and_answers_on_the_right(tmp_path, tok):
    long = " ".join(f"word{i}" for i in range(80))
    (ex,), _ = _load(tmp_path, [{"prompt": long, "chosen": "the answer is short", "rejected": "x " * 60}],
                     "preference")
    full = prompt_ids(long, tok, NAMED["chatml"])
    e = dpo.encode(ex, tok, NAMED["chatml"], _cfg(cutoff_len=48, max_prompt_len=20))
    assert e.meta["prompt_len"] == 20 and e.input_ids[:20] == full[-20:] and e.meta["truncated"]
    assert len(e.input_ids) <= 48 and 20 + len(e.meta["rejected"]) == 48  # the long answer cut to the room left
    assert dpo.encode(ex, tok, NAMED["chatml"], _cfg(cutoff_len=48, max_prompt_len=20, truncation="drop")) == "too_long"


def test_drops_are_counted_and_printed(tmp_path, tok):
    rows = [{"prompt": "q1", "chosen": "same answer", "rejected": "same answer"},  # identical
            {"prompt": "q2", "chosen": "42", "rejected": "it is forty one"},  # chosen too short at 2 words
            {"prompt": " ".join(["long"] * 200), "chosen": "a b c", "rejected": "d e f"},  # prompt fills cutoff
            {"prompt": "q4", "chosen": "the answer is 42", "rejected": "the answer is 41"}]
    examples, _ = _load(tmp_path, rows, "preference")
    kept, stats = tokenize_examples(examples, tok, NAMED["chatml"], _cfg(cutoff_len=64, min_response_words=2),
                                    dpo.encode)
    assert [e.line for e in kept] == [4]
    (e,) = kept  # the rejected answer's tokens count too
    assert stats.total_tokens == len(e.input_ids) + len(e.meta["rejected"])
    assert stats.target_tokens == sum(x != -100 for x in e.labels + e.meta["rejected_labels"])
    assert stats.dropped == {"identical_pair": 1, "short_response": 1, "completion_cut": 1}
    assert "3 dropped (completion_cut 1, identical_pair 1, short_response 1)" in stats.lines()[0]


def test_packing_and_train_on_inputs_are_refused_with_the_reason(tiny_model_dir):
    def cfg(fmt, name, **data):
        return load_config(raw={"model": {"name": tiny_model_dir("llama")}, "objective": {"name": name},
                                "data": {"datasets": [{"path": "x.jsonl", "format": fmt}], **data}})
    with pytest.raises(ConfigError, match="data.packing: not possible with objective 'dpo'"):
        check_fit(dpo, cfg("preference", "dpo", packing=True))
    with pytest.raises(ConfigError, match="data.train_on_inputs: objective 'kto'"):
        check_fit(kto, cfg("unpaired", "kto", train_on_inputs=True))
    with pytest.raises(ConfigError, match="'unpaired' is not read by objective 'dpo'"):
        check_fit(dpo, cfg("unpaired", "dpo"))
    with pytest.raises(ConfigError, match="'preference' is not read by objective 'causal_lm'"):
        check_fit(OBJECTIVES.get("causal_lm"), cfg("preference", "causal_lm"))


def test_lab_preference_export_trains_as_written(tmp_path, tiny_model_dir):
    train, val, _ = export_task("preferences", tmp_path / "prefs", n_train=16, n_val=4, n_test=4)
    result = tunewright.train({
        "model": {"name": tiny_model_dir("llama")}, "objective": {"name": "dpo"}, "method": {"name": "lora", "r": 4},
        "data": {"datasets": [{"path": str(train), "format": "preference"}],
                 "eval_datasets": [{"path": str(val), "format": "preference"}], "template": "chatml", "cutoff_len": 160,
                 "max_prompt_len": 128},
        "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 2, "learning_rate": 1e-3},
        "eval": {"at_start": True}, "output": {"dir": str(tmp_path / "runs"), "name": "dpo"}})
    logs = read_metrics(result.run_dir)
    evals = [m for m in logs if "eval_loss" in m]
    steps = [m for m in logs if "loss" in m and "eval_loss" not in m]
    # every pair trains (long paragraphs lose their start, not the pair) and the first loss is ln 2
    assert evals[0]["eval_pairs"] == 4 and len(steps) == 2 and steps[0]["target_pairs"] == 4
    assert abs(steps[0]["loss"] - math.log(2)) < 1e-6 and abs(evals[0]["eval_loss"] - math.log(2)) < 1e-6
    assert {"rewards/chosen", "rewards/rejected", "margins", "accuracy"} <= set(steps[0])
