"""The command line with the new methods and several adapters (cli.py, in-process): a prompt-tuning
run trained by `tunewright train` and read back by `inspect RUN --nearest`, `validate` counts,
`generate`/`chat`/`eval` with several `--adapter`s switched by name or off, `merge --dtype`
with its parity line, and `adapters combine`."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from tunewright.cli import main
from tunewright.config import ModelConfig
from tunewright.data.templates import NAMED
from tunewright.models.load import load_model, load_tokenizer
from tunewright.models.methods import METHODS
from tunewright.models.params import perturb_trainable

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [{"instruction": "Name the capital of France.", "input": "", "output": "Paris."},
        {"instruction": "Add the numbers.", "input": "two plus three", "output": "Five."},
        {"instruction": "Say hello politely.", "input": "", "output": "Hello! How can I help you today?"},
        {"instruction": "Count to five.", "input": "", "output": "one two three four five"}]
INIT_TEXT = "Classify the capital of France"


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("cli-adapters")
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": tiny_model_dir("llama")},
        "data": {"datasets": [{"path": str(data)}], "template": "alpaca", "cutoff_len": 128,
                 "cache_dir": str(root / "cache")},
        "method": {"name": "prompt", "prompt_tuning_init": "text", "prompt_tuning_init_text": INIT_TEXT},
        # a learning rate too small to move the prompt: the run's virtual tokens are still the text's
        "train": {"batch_size": 2, "micro_batch_size": 2, "max_steps": 2, "learning_rate": 1e-9},
        "output": {"dir": str(root / "runs"), "name": "prompt"}}))
    return root, recipe, data, tiny_model_dir("llama")


def saved(path, folder, name="lora", seed=1, **kw):
    """A trained-looking folder of `name` with its tokenizer and a run record naming the base."""
    method = METHODS.get(name)
    torch.manual_seed(seed)
    model = method.apply(load_model(ModelConfig(name=path)), method.Config(**kw))
    perturb_trainable(model, 0.2, seed=seed)
    method.save(model, folder)
    tokenizer = load_tokenizer(ModelConfig(name=path))
    tokenizer.chat_template = NAMED["alpaca"]  # as a run saves it: chat renders turns with it
    tokenizer.save_pretrained(folder)
    (folder / "tunewright.json").write_text(json.dumps({"method": name, "base_model": path}))
    return str(folder)


def test_a_prompt_tuning_run_trains_and_inspect_shows_its_virtual_tokens_nearest_tokens(env, capsys):
    from transformers import AutoTokenizer

    root, recipe, _, model = env
    assert main(["validate", str(recipe)]) == 0
    text_ids = AutoTokenizer.from_pretrained(model)(INIT_TEXT)["input_ids"]
    assert f"trainable {len(text_ids) * 64:,} of " in capsys.readouterr().out  # n virtual tokens x d=64
    assert main(["train", str(recipe)]) == 0
    capsys.readouterr()

    assert main(["inspect", str(root / "runs" / "prompt"), "--nearest", "3"]) == 0
    out = capsys.readouterr().out
    assert "method prompt, saved as PROMPT_TUNING" in out and f"trainable {len(text_ids) * 64:,} of " in out
    firsts = re.findall(r"^virtual token \d+: (.+?) (1\.000|0\.99\d),", out, re.M)
    tok = AutoTokenizer.from_pretrained(model)
    assert [eval(shown) for shown, _ in firsts] == [tok.decode([t]) for t in text_ids]  # noqa: S307 (a repr we wrote)

    lora_dir = saved(model, root / "lora-adapter", r=4)
    assert main(["inspect", lora_dir, "--nearest", "3"]) == 2
    assert "method 'lora' learns no vectors in the vocabulary's embedding space" in capsys.readouterr().err


def test_generate_and_chat_switch_between_adapters_and_off(env, tmp_path, capsys, monkeypatch):
    _, _, _, model = env
    a, b = saved(model, tmp_path / "a", seed=1, r=4), saved(model, tmp_path / "b", seed=2, r=4)
    args = ["-p", "The capital of France is", "--max-new-tokens", "5", "--raw"]
    singles = {}
    for name, folder in (("a", a), ("b", b)):
        assert main(["generate", folder, *args]) == 0  # today's single folder
        singles[name] = capsys.readouterr().out.removesuffix("\n")
    assert main(["generate", model, *args]) == 0
    singles["base"] = capsys.readouterr().out.removesuffix("\n")
    assert len(set(singles.values())) == 3, singles  # the adapters change the answer: the switch is visible

    assert main(["generate", "--adapter", a, "--adapter", f"b={b}", "--use", "b", "--use", "base", "--use", "a",
                 *args]) == 0
    out = capsys.readouterr().out
    for name in ("b", "base", "a"):
        assert f"### [{name}] The capital of France is\n{singles[name]}\n" in out

    turns = iter(["Hello", "/use b", "Hello", "/use base", "Hello", "/use c"])
    monkeypatch.setattr("builtins.input", lambda prompt="": _next_or_eof(turns))
    assert main(["chat", "--adapter", f"a={a}", "--adapter", f"b={b}", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "adapters: a, b; answering: a" in out and "answering: b" in out and "answering: base" in out
    assert out.count("model> ") == 3 and "no adapter named 'c'; loaded: a, b (or base)" in out


def _next_or_eof(turns):
    try:
        return next(turns)
    except StopIteration:
        raise EOFError from None


def test_eval_takes_several_adapters_as_candidates_and_one_as_before(env, tmp_path, capsys):
    _, _, data, model = env
    a, b = saved(model, tmp_path / "a", seed=1, r=4), saved(model, tmp_path / "b", seed=2, r=4)
    common = ["--data", str(data), "--metrics", "exact_match", "--max-new-tokens", "2", "--limit", "1"]
    assert main(["eval", "--adapter", f"first={a}", "--adapter", b, "--model", model, *common,
                 "--out", str(tmp_path / "two")]) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert [c["name"] for c in results["candidates"]] == ["first", "b"]
    assert main(["eval", "--adapter", a, *common, "--out", str(tmp_path / "one")]) == 0
    assert [c["name"] for c in json.loads((tmp_path / "one" / "results.json").read_text())["candidates"]] == ["a"]


def test_merge_dtype_prints_the_parity_line_and_adapters_combine_writes_an_adapter(env, tmp_path, capsys):
    _, _, _, model = env
    a, b = saved(model, tmp_path / "a", seed=1, r=4), saved(model, tmp_path / "b", seed=2, r=4)
    assert main(["merge", a, "--out", str(tmp_path / "m16"), "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^parity: max \|logit diff\| merged vs unmerged \S+ on 4 prompts \(bfloat16\), limit 2 x .*PASS$",
                     out, re.M)
    assert main(["merge", a, "--out", str(tmp_path / "m8"), "--dtype", "int8"]) == 2
    assert "merge --dtype: 'int8'" in capsys.readouterr().err

    assert main(["adapters", "combine", a, b, "--how", "cat", "--weights", "1,0.5", "--out", str(tmp_path / "c")]) == 0
    assert "combined adapter (cat, weights [1.0, 0.5])" in capsys.readouterr().out
    assert json.loads((tmp_path / "c" / "adapter_config.json").read_text())["r"] == 8
    assert main(["generate", str(tmp_path / "c"), "-p", "Hi", "--max-new-tokens", "2", "--raw"]) == 0
