"""The `tunewright` command line, called in-process (`main([...])` -> exit code), end to end.

One LoRA run of 6 steps on a tiny Llama is trained per module (through the CLI, with overrides)
and validate, generate, chat, merge and inspect are checked against it; bad input files must stop
with exit code 2 and one line `file:line: field: reason`, never a traceback.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from tunewright.cli import main

ROWS = [
    {"instruction": "Why do cats purr?", "input": "", "output": "Cats purr when they are content."},
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris."},
    {"instruction": "Add the numbers.", "input": "two plus three", "output": "Five."},
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, move."},
    {"instruction": "Say hello politely.", "input": "", "output": "Hello! How can I help you today?"},
    {"instruction": "Extract the city.", "input": "Ada lives in London.", "output": "London"},
    {"instruction": "Count to five.", "input": "", "output": "one two three four five"},
    {"instruction": "Summarize.", "input": "Bob said the meeting moved to Friday.", "output": "Meeting on Friday."},
]
TRAINED = [f"⟦{r['output']}</s>⟧" for r in ROWS]  # how validate marks each reply: trained up to its EOS
COUNT_LINE = re.compile(r"^trainable ([\d,]+) of ([\d,]+) \((\d+\.\d+)%\)$", re.M)
NO_EOT_TEMPLATE = ("{%- for m in messages -%}{%- if m['role'] == 'user' -%}"
                   "{{ '### Instruction:\\n' + m['content'] + '\\n\\n### Response:\\n' }}"
                   "{%- else -%}{{ m['content'] }}{%- endif -%}{%- endfor -%}")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(*argv) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured (for module fixtures, where capsys is not available)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def as_int(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    """A recipe, its data and the model, and `args(*overrides)` for a CLI call on them."""
    root = tmp_path_factory.mktemp("cli")
    data = write_jsonl(root / "alpaca.jsonl", ROWS)
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": "tiny-llama"},  # replaced by the test model through an override, as users do
        "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca", "cutoff_len": 256,
                 "cache_dir": str(root / "cache")},
        "method": {"name": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "train": {"batch_size": 2, "micro_batch_size": 2, "max_steps": 2, "learning_rate": 0.01},
    }))
    model, runs = tiny_model_dir("llama"), root / "runs"
    return SimpleNamespace(root=root, data=data, recipe=recipe, model=model, runs=runs,
                           args=lambda *extra: [str(recipe), f"model.name={model}", f"output.dir={runs}", *extra])


@pytest.fixture(scope="module")
def run(env):
    """The module's one training run, through the CLI: 6 LoRA steps (overriding the recipe's 2)."""
    rc, out, err = run_cli("train", *env.args("output.name=lora", "train.max_steps=6", "train.learning_rate=0.005"))
    assert rc == 0, err
    env.run_dir, env.train_out = env.runs / "lora", out
    return env


def base_param_count(model_dir: str) -> int:
    import transformers
    return sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(model_dir).parameters())


def lora_params(r: int, hidden: int = 64, kv: int = 32, layers: int = 2) -> int:
    """LoRA on q_proj [64->64] and v_proj [64->32]: r * (in + out) each, per layer."""
    return layers * r * ((hidden + hidden) + (hidden + kv))


# ------------------------------------------------------------------ validate

def test_validate_prints_the_data_report_and_trains_nothing(env, capsys):
    assert main(["validate", *env.args("output.name=validated")]) == 0
    out = capsys.readouterr().out
    assert "tokenized 8 rows: 8 kept, 0 truncated to 256 tokens, 0 dropped (none)" in out
    total, trained, pct = re.search(r"tokens: ([\d,]+) total, ([\d,]+) trained \((\d+\.\d)%\)", out).groups()
    trained, total = as_int(trained), as_int(total)
    assert 0 < trained < total and float(pct) == pytest.approx(100 * trained / total, abs=0.05)
    histogram = re.findall(r"^\s+([\d,]+)-([\d,]+)\s+(#+) ([\d,]+)$", out, re.M)
    assert histogram and sum(as_int(c) for *_, c in histogram) == 8
    assert re.search(r"packing efficiency \(\d+ rows of 256 tokens\): \d+\.\d%", out)
    # two rendered examples; exactly the reply and its EOS are marked as trained
    examples = out.split("== examples")[1]
    assert examples.count(f"-- {env.data}:") == 2
    assert TRAINED[0] in examples and TRAINED[1] in examples
    assert "### Instruction:\nWhy do cats purr?" in examples and "⟦Why" not in examples
    trainable, total_params, _ = COUNT_LINE.search(out).groups()
    assert as_int(trainable) == lora_params(4)
    assert as_int(total_params) == base_param_count(env.model) + lora_params(4)
    assert "WARNING" not in out
    assert not (env.runs / "validated").exists()  # a dry run: no run folder
    # the memory estimate (models/memory.py) of the recipe's micro-batch at its cutoff_len
    assert "memory estimate (lora, float32 weights, adamw, batch 2 x seq 256, checkpointing off):" in out


def test_validate_warns_when_no_example_trains_an_eos(env, capsys):
    """Negative control: a template that writes no end-of-turn token, with add_eos_token off."""
    template = env.root / "no_eot.jinja"
    template.write_text(NO_EOT_TEMPLATE)
    assert main(["validate", *env.args(f"data.template={template}", "data.add_eos_token=false")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"WARNING: 8 of 8 training examples have no end-of-turn/EOS token \['</s>'\]", out)
    assert "⟦Cats purr when they are content.⟧" in out  # and indeed no </s> in the trained part


# ------------------------------------------------------------------ train

def test_train_applies_overrides_and_writes_the_run_folder(run):
    cfg = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert cfg["train"]["max_steps"] == 6 and cfg["train"]["learning_rate"] == 0.005
    assert cfg["model"]["name"] == run.model
    steps = [json.loads(line)["step"] for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6
    assert (run.run_dir / "final" / "adapter_config.json").is_file()
    assert "done: 6 steps (max_steps)" in run.train_out
    assert as_int(COUNT_LINE.search(run.train_out).group(1)) == lora_params(4)


def test_unknown_key_exits_2_with_did_you_mean(env, capsys):
    assert main(["train", *env.args("output.name=typo", "train.mx_steps=3")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f'error: {env.recipe}: train.mx_steps: unknown key (did you mean "max_steps"?)']
    assert not (env.runs / "typo").exists()


def test_non_empty_run_folder_is_refused_unless_overwrite_or_resume(env, capsys):
    def args(*extra):
        return ["train", *env.args("output.name=again", "train.max_steps=1", *extra)]

    assert main(args()) == 0
    run_dir = env.runs / "again"
    (run_dir / "mine.txt").write_text("keep")
    capsys.readouterr()

    assert main(args()) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "is not empty" in err and "Traceback" not in err
    assert (run_dir / "mine.txt").is_file()

    assert main(args("train.resume=auto", "train.max_steps=2")) == 0
    out = capsys.readouterr().out
    assert f"resumed from {run_dir / 'checkpoints' / 'step-1'} at step 1" in out and "done: 2 steps" in out

    capsys.readouterr()
    assert main(args("output.overwrite=true")) == 2  # overwrite removes only what a run wrote
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "did not write (mine.txt)" in err
    assert (run_dir / "mine.txt").read_text() == "keep"
    (run_dir / "mine.txt").unlink()
    assert main(args("output.overwrite=true")) == 0
    assert [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1]


def test_rerun_after_a_data_error_is_not_refused(env, capsys):
    """A run stopped by bad data leaves only config.yaml behind: the corrected rerun may start there."""
    bad = write_jsonl(env.root / "rerun.jsonl", ['{"instruction": "a" "output": "b"}'])
    args = ["train", *env.args("output.name=rerun", "train.max_steps=1")]
    assert main(args + [f"data.datasets.0.path={bad}"]) == 2
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err


# ------------------------------------------------------------------ bad input

GOOD = json.dumps(ROWS[0])
BAD_INPUT = {
    # name: (file lines, extra overrides, expected `file:line: field: reason` after the path)
    "malformed_json": ([GOOD, '{"instruction": "a" "output": "b"}'], [], r":2: invalid JSON: Expecting ',' delimiter"),
    "missing_field": ([GOOD, '{"instruction": "a"}'], [], r":2: output: missing"),
    "empty_field": ([GOOD, GOOD, '{"instruction": "a", "output": "   "}'], [], r":3: output: empty"),
    "wrong_type": ([GOOD, '{"instruction": 3, "output": "b"}'], [],
                   r":2: instruction: expected a string, got a number"),
    "not_an_object": ([GOOD, "[1, 2]"], [], r":2: expected a JSON object, got a list"),
    "empty_file": ([""], [], r": file is empty"),
    "all_filtered": ([GOOD], ["data.cutoff_len=16"], r": no trainable tokens left: 1 rows in, all dropped: "
                                                     r"response_truncated 1"),
    "all_masked": ([json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello", "train": False}]})],
                   ["data.datasets.0.format=messages"],
                   r": no trainable tokens left: 1 rows in, all dropped: no_target 1"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_located_line(case, env, capsys):
    lines, extra, expected = BAD_INPUT[case]
    path = write_jsonl(env.root / f"{case}.jsonl", lines)
    rc = main(["train", *env.args(f"output.name=bad_{case}", f"data.datasets.0.path={path}", *extra)])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.match(f"error: {re.escape(str(path))}{expected}", err), err


def test_unknown_format_names_the_key(env, capsys):
    rc = main(["validate", *env.args("data.datasets.0.format=alpacca")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    m = re.match(r"error: (\S+): (data\.datasets\.0\.)?format: "
                 r"unknown data format 'alpacca' \(did you mean \"alpaca\"\?\)", err)
    assert m and m.group(1) in {str(env.recipe), str(env.data)}, err


def test_on_error_skip_counts_bad_rows(env, capsys):
    path = write_jsonl(env.root / "skip.jsonl", [GOOD, '{"instruction": "a" "output": "b"}', json.dumps(ROWS[1]),
                                                 '{"instruction": "a"}', json.dumps(ROWS[2])])
    args = ["validate", *env.args(f"data.datasets.0.path={path}", "data.on_error=skip")]
    assert main(args + ["data.max_skipped=2"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"{re.escape(str(path))}\s+read 5\s+skipped 2 .*-> 3", out)
    assert f"{path}: skipped 2 of 5 rows (data.on_error: skip)" in out
    assert f"1 x invalid JSON: Expecting ',' delimiter  at {path}:2" in out
    assert f"1 x output: missing  at {path}:4" in out
    assert "tokenized 3 rows: 3 kept" in out

    assert main(args + ["data.max_skipped=1"]) == 2  # over the cap: stop, still one line
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "2 of 5 rows are bad, more than data.max_skipped allows" in err


def test_console_script_bad_config_exits_2_without_traceback(env):
    """The one subprocess test: the installed `tunewright` script and its exit code."""
    script = Path(sys.executable).with_name("tunewright")
    script = script if script.is_file() else Path(shutil.which("tunewright") or script)
    bad = env.root / "bad.yaml"
    bad.write_text("data:\n  datasets:\n    - path: x.jsonl\n      fromat: alpaca\n")
    proc = subprocess.run([str(script), "train", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f'error: {bad}: data.datasets.0.fromat: unknown key (did you mean "format"?)']
    assert "Traceback" not in proc.stdout + proc.stderr


# ------------------------------------------------------------------ generate

@pytest.fixture
def spy(monkeypatch):
    """Record what the CLI feeds `model.generate` (input_ids) and what comes back."""
    import tunewright.models.trained as load

    calls: list[dict] = []
    real = load.load_trained

    def load_trained(*a, **k):
        model, tokenizer = real(*a, **k)
        inner = model.generate

        def generate(**kw):
            out = inner(**kw)
            calls.append({"input_ids": kw["input_ids"].clone(), "attention_mask": kw["attention_mask"].clone(),
                          "output": out.clone(), "tokenizer": tokenizer})
            return out

        model.generate = generate
        return model, tokenizer

    monkeypatch.setattr(load, "load_trained", load_trained)
    return calls


def gen(run, capsys, *extra) -> str:
    assert main(["generate", str(run.run_dir), *map(str, extra)]) == 0
    return capsys.readouterr().out


def test_generate_greedy_is_deterministic_and_bounded(run, capsys, spy):
    first = gen(run, capsys, "-p", "Why do cats purr?", "--max-new-tokens", 12)
    assert first.strip() and gen(run, capsys, "-p", "Why do cats purr?", "--max-new-tokens", 12) == first
    gen(run, capsys, "-p", "Why do cats purr?", "--max-new-tokens", 3)
    long, short = spy[0], spy[2]
    width = long["input_ids"].shape[1]
    assert 3 < long["output"].shape[1] - width <= 12 and short["output"].shape[1] - width == 3
    assert torch.equal(short["output"], long["output"][:, :width + 3])


def test_generate_sampling_is_seeded(run, capsys):
    args = ["-p", "Why do cats purr?", "--max-new-tokens", 16, "--sample", "--temperature", 1.5]
    a, b, c = (gen(run, capsys, *args, "--seed", s) for s in (1, 1, 2))
    assert a == b and a != c


def test_generate_stop_string_cuts_the_text(run, capsys, spy):
    full = gen(run, capsys, "-p", "Why do cats purr?", "--max-new-tokens", 24).rstrip("\n")
    stop = re.search(r"[A-Za-z]{3}", full[4:]).group()  # a plain-letter piece past the start
    cut = gen(run, capsys, "-p", "Why do cats purr?", "--max-new-tokens", 24, "--stop", stop).rstrip("\n")
    assert cut == full[:full.index(stop)] and len(cut) < len(full)
    assert spy[1]["output"].shape[1] < spy[0]["output"].shape[1]  # generation itself stopped early


def test_generate_prompts_file_gives_one_output_per_line(run, capsys, spy):
    prompts = ["Why do cats purr?", "Say hello politely.", "   ", "Count to five."]
    path = run.root / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    out = gen(run, capsys, "--prompts-file", path, "--max-new-tokens", 4)
    wanted = [p for p in prompts if p.strip()]
    assert [line for line in out.splitlines() if line.startswith("### ") and line[4:] in prompts] == \
        [f"### {p}" for p in wanted]
    assert spy[0]["output"].shape[0] == len(wanted)  # one generation per non-blank line, in one batch


def test_generate_feeds_the_training_prompt_tokens(run, capsys, spy):
    """Train/serve identity: the ids the CLI feeds the model are the first ids of the training example."""
    from tunewright.config import load_config
    from tunewright.data.tokenize import tokenize_examples
    from tunewright.data.types import IGNORE_INDEX, Example, Message

    gen(run, capsys, "-p", ROWS[0]["instruction"], "--max-new-tokens", 2)
    fed = spy[0]["input_ids"][0].tolist()
    tok = spy[0]["tokenizer"]
    cfg = load_config(run.run_dir / "config.yaml")
    row = ROWS[0]
    example = Example("x", 1, messages=[Message("user", row["instruction"]), Message("assistant", row["output"])])
    (encoded,), _ = tokenize_examples([example], tok, tok.chat_template, cfg.data)
    assert encoded.input_ids[:len(fed)] == fed
    assert set(encoded.labels[:len(fed)]) == {IGNORE_INDEX} and encoded.labels[len(fed)] != IGNORE_INDEX
    assert fed[0] == tok.bos_token_id and fed.count(tok.bos_token_id) == 1  # one BOS, not two


def test_generate_keeps_the_trained_system_prompt(env, capsys, spy):
    assert main(["train", *env.args("output.name=system", "train.max_steps=1",
                                    "data.system_prompt=Answer like a pirate.")]) == 0
    capsys.readouterr()
    assert main(["generate", str(env.runs / "system"), "-p", "Why do cats purr?", "--max-new-tokens", "1"]) == 0
    assert "Answer like a pirate." in spy[0]["tokenizer"].decode(spy[0]["input_ids"][0])


def test_generate_and_chat_put_back_a_recorded_system_prompt(run, capsys, monkeypatch, spy):
    """A final/ whose tunewright.json records `system_prompt` gets it in every prompt, as in training."""
    from tunewright.config import load_config
    from tunewright.data.tokenize import encode_prompt
    from tunewright.data.types import Message

    final = run.root / "system_final"
    shutil.copytree(run.run_dir / "final", final)
    meta = json.loads((final / "tunewright.json").read_text())
    (final / "tunewright.json").write_text(json.dumps({**meta, "system_prompt": "Answer like a pirate."}))
    assert main(["generate", str(final), "-p", "Why do cats purr?", "--max-new-tokens", "1"]) == 0
    tok = spy[0]["tokenizer"]
    data = load_config(run.run_dir / "config.yaml", ["data.system_prompt=Answer like a pirate."]).data
    assert spy[0]["input_ids"][0].tolist() == encode_prompt([Message("user", "Why do cats purr?")], tok,
                                                             tok.chat_template, system_prompt=data.system_prompt)
    lines = iter(["hi", ""])  # an empty line ends the chat
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", str(final), "--max-new-tokens", "1"]) == 0
    assert "Answer like a pirate." in tok.decode(spy[1]["input_ids"][0])


# ------------------------------------------------------------------ chat

def test_chat_second_turn_sees_the_first_exchange(run, capsys, monkeypatch, spy):
    import tunewright.eval.generate as generation

    lines = iter(["Why do cats purr?", "Say hello politely."])

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    replies, real = [], generation.generate

    def recording(*a, **k):
        out = real(*a, **k)
        replies.append(out[0])
        return out

    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr(generation, "generate", recording)
    assert main(["chat", str(run.run_dir), "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("model> ") == 2 and len(spy) == 2
    tok = spy[0]["tokenizer"]
    first, second = (c["input_ids"][0].tolist() for c in spy)
    assert second[:len(first)] == first  # the second prompt continues the first conversation
    text = tok.decode(second)
    assert "Why do cats purr?" in text and "Say hello politely." in text
    assert replies[0] and replies[0] in text


# ------------------------------------------------------------------ merge, inspect

def test_merge_writes_a_plain_model_with_the_same_logits(run, capsys):
    import transformers
    from peft import PeftModel

    out = run.root / "merged"
    assert main(["merge", str(run.run_dir / "final"), "--out", str(out)]) == 0
    assert f"merged model written to {out}" in capsys.readouterr().out
    merged = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(run.model).eval()
    ids = torch.tensor([[1, 5, 9, 7, 3, 11, 40, 2]])
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        want = PeftModel.from_pretrained(copy.deepcopy(base), run.run_dir / "final").eval()(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert not torch.allclose(plain, want, atol=1e-4)  # training moved the adapter: the check is not vacuous

    assert main(["merge", str(run.run_dir / "final"), "--out", str(out)]) == 2  # now non-empty
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: {out}: the output folder is not empty; choose a new folder (nothing was written)"]


def test_inspect_model_folder_and_recipe(env, capsys):
    base = base_param_count(env.model)
    assert main(["inspect", env.model]) == 0  # the default method: LoRA r=8
    trainable, total, _ = COUNT_LINE.search(capsys.readouterr().out).groups()
    assert as_int(total) - as_int(trainable) == base and as_int(trainable) > 0

    counts = {}
    for r in (4, 16):
        assert main(["inspect", str(env.recipe), f"model.name={env.model}", f"method.r={r}"]) == 0
        out = capsys.readouterr().out
        trainable, total, pct = COUNT_LINE.search(out).groups()
        counts[r] = as_int(trainable)
        assert as_int(total) == base + counts[r]
        assert float(pct) == pytest.approx(100 * counts[r] / (base + counts[r]), abs=0.01)
    assert counts == {4: lora_params(4), 16: lora_params(16)}
