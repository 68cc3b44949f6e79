"""Every registered method through every inference path: label scoring, multiple choice and
generation give the same answers batched (left-padded rows of different lengths) as one at a
time, and `tunewright generate`, `chat` and `eval` take a folder the method saved.

Prompt tuning is the case that needs care: peft drops position ids for it, so without
models/methods/prompt.py's positions-from-the-mask hook a left-padded row sits further from its
virtual tokens than the same row alone, and the multiple-choice scores differ by ~0.1."""

from __future__ import annotations

import json

import pytest
import torch

from tunewright.cli import main
from tunewright.config import ModelConfig
from tunewright.data.templates import NAMED
from tunewright.eval.generate import generate
from tunewright.eval.multiple_choice import evaluate_multiple_choice
from tunewright.eval.scoring import label_probabilities
from tunewright.models.load import load_model, load_tokenizer
from tunewright.models.methods import METHODS
from tunewright.models.params import perturb_trainable
from tunewright.models.trained import load_trained

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {"full": {}, "selective": {"last_k_layers": 1}, "lora": {"r": 4}, "ia3": {}, "prompt": {"num_virtual_tokens": 3},
         "prefix": {"num_virtual_tokens": 3}, "bottleneck": {}, "cola": {}}
PROMPTS = ["The capital of France is", "What is two plus three? Two plus three is five and", "Hello",
           "Summarize the following conversation. Alice asked Bob"]
QUESTIONS = [{"question": "What is two plus three?", "choices": ["four", "five", "six seven"], "answer": 1},
             {"question": "The capital of France?", "choices": ["Paris is it", "Rome"], "answer": 0},
             {"question": "Hi", "choices": ["a", "bb cc dd"], "answer": 0}]


def test_every_registered_method_has_a_case():
    assert sorted(CASES) == METHODS.names()


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory):
    """name -> a folder the method saved after its weights moved (as training would move them), with
    the run record naming the method and base, and the tokenizer."""
    path, folders = tiny_model_dir("llama"), {}
    for name, kw in CASES.items():
        method = METHODS.get(name)
        torch.manual_seed(0)
        model = method.apply(load_model(ModelConfig(name=path)), method.Config(**kw))
        perturb_trainable(model, 0.1, seed=1)
        folder = tmp_path_factory.mktemp(name)
        method.save(model, folder)
        tokenizer = load_tokenizer(ModelConfig(name=path))
        tokenizer.chat_template = NAMED["alpaca"]  # what a run saves: chat needs a template
        tokenizer.save_pretrained(folder)
        (folder / "tunewright.json").write_text(json.dumps({"method": name, "base_model": path}))
        folders[name] = folder
    return folders


@pytest.mark.parametrize("name", sorted(CASES))
def test_scoring_multiple_choice_and_generation_batched_equal_one_at_a_time(name, saved):
    model, tok = load_trained(saved[name])
    batched = label_probabilities(model, tok, PROMPTS, ["Yes", "No way"], raw=True, batch_size=4)
    alone = label_probabilities(model, tok, PROMPTS, ["Yes", "No way"], raw=True, batch_size=1)
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=0)

    together = evaluate_multiple_choice(model, tok, QUESTIONS, mode="text", batch_size=4)["per_example"]
    apart = evaluate_multiple_choice(model, tok, QUESTIONS, mode="text", batch_size=1)["per_example"]
    for a, b in zip(together, apart):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)

    texts = generate(model, tok, PROMPTS, raw=True, max_new_tokens=6, batch_size=4)
    assert texts == generate(model, tok, PROMPTS, raw=True, max_new_tokens=6, batch_size=1)
    assert any(texts)


@pytest.mark.parametrize("name", sorted(CASES))
def test_generate_chat_and_eval_take_the_methods_folder(name, saved, tmp_path, capsys, monkeypatch):
    folder = str(saved[name])
    assert main(["generate", folder, "-p", PROMPTS[0], "-p", PROMPTS[2], "--max-new-tokens", "4", "--raw"]) == 0
    assert capsys.readouterr().out.count("### ") == 2

    monkeypatch.setattr("builtins.input", _then_eof(iter(["Hello there"])))  # one turn, then Ctrl-D
    assert main(["chat", folder, "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.count("model> ") == 1

    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"instruction": "Say hello.", "input": "", "output": "Hello"}) + "\n")
    out = tmp_path / "eval"
    assert main(["eval", "--adapter", folder, "--data", str(data), "--metrics", "exact_match",
                 "--max-new-tokens", "3", "--out", str(out)]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert json.dumps(results).count("exact_match") >= 1


def _then_eof(lines):
    def ask(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None
    return ask
