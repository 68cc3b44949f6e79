"""Candidates compared on the same data: rows read through the project's formats, each candidate
prompted as it was trained, outputs saved as jsonl, scores and improvements exact, and the
`tunewright eval` command (config or quick mode) with its exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewright.data.templates import NAMED
from tunewright.errors import DataError
from tunewright.eval.compare import (EvalRow, Loaded, answer, evaluate_candidates, improvement, load_candidate,
                                     load_rows)
from tunewright.eval.config import Candidate, EvalData, Generation, load_eval_config

ROWS = [
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "Five."},
    {"instruction": "Say hello politely.", "input": "", "output": "Hello, how can I help you today?"},
    {"instruction": "Count from one to three.", "input": "", "output": "One two three."},
    {"instruction": "Name the capital of Italy.", "input": "", "output": "Rome."},
    {"instruction": "Give a tip for staying healthy.", "input": "", "output": "Sleep enough every night."},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    """A 3-step LoRA run of the tiny Llama on alpaca rows with the alpaca template."""
    from tunewright.run import train

    tmp = tmp_path_factory.mktemp("lora_run")
    data = write_jsonl(tmp / "train.jsonl", ROWS * 3)
    cfg = {"model": {"name": tiny_model_dir("llama")},
           "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca",
                    "val_set_size": 4, "cutoff_len": 64},
           "method": {"name": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
           "train": {"batch_size": 4, "micro_batch_size": 4, "max_steps": 3, "learning_rate": 1e-2, "seed": 0},
           "eval": {"steps": 1, "at_start": True},
           "output": {"dir": str(tmp / "runs"), "name": "lora"}}
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def compared(tiny_model_dir, lora_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    data = write_jsonl(tmp / "test.jsonl", ROWS)
    cfg = load_eval_config(raw={
        "candidates": [{"name": "base", "model": tiny_model_dir("llama"), "template": "alpaca"},
                       {"name": "lora", "run": str(lora_run)}],
        "data": {"path": str(data), "format": "alpaca", "skip": 1},
        "metrics": ["exact_match", "chrf", "rouge1"],
        "generation": {"max_new_tokens": 6, "batch_size": 4},
        "output": {"dir": str(tmp), "name": "out", "samples": 2}})
    return cfg, evaluate_candidates(cfg, echo=lambda *_: None)


# ---------------------------------------------------------------- reading rows

def test_rows_split_into_prompt_and_reference(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Add the numbers.", "input": "2 and 3", "output": "Five."}])
    (row,), _ = load_rows(EvalData(path=str(path), format="alpaca"))
    assert row.reference == "Five."
    assert row.messages == [{"role": "user", "content": "Add the numbers.", "context": "2 and 3"}]
    assert row.prompt == "Add the numbers.\n\n2 and 3"  # what a seq2seq encoder was trained on

    chat = write_jsonl(tmp_path / "m.jsonl", [{"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of Peru?"},
        {"role": "assistant", "content": "Lima."}]}])
    (row,), _ = load_rows(EvalData(path=str(chat), format="messages"))
    # the prompt is every turn before the last reply, earlier replies included
    assert [m["content"] for m in row.messages] == ["Be brief.", "Hi", "Hello.", "Capital of Peru?"]
    assert row.reference == "Lima."

    pc = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Summarize: a b c\nSummary: ", "completion": "abc"}])
    (row,), _ = load_rows(EvalData(path=str(pc), format="prompt_completion"))
    assert (row.prompt, row.messages, row.reference) == ("Summarize: a b c\nSummary: ", None, "abc")


def test_skip_and_limit_are_counted(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [*ROWS, {"instruction": "no output here"}])
    rows, counts = load_rows(EvalData(path=str(path), skip=2, limit=3, on_error="skip", max_skipped=1))
    assert [r.line for r in rows] == [3, 4, 5]
    assert (counts.read, counts.bad, counts.skipped, counts.cut, counts.used) == (7, 1, 2, 1, 3)
    with pytest.raises(DataError, match="no rows left after skipping 9 of 6"):
        load_rows(EvalData(path=str(path), skip=9, on_error="skip", max_skipped=1))
    with pytest.raises(DataError, match=r"d.jsonl:7: output: missing"):
        load_rows(EvalData(path=str(path)))


def test_completion_rows_go_in_raw_and_conversations_templated(monkeypatch):
    calls = []

    def fake_generate(model, tokenizer, prompts, *, template, raw, system_prompt, **kw):
        calls.append({"prompts": prompts, "raw": raw, "system": system_prompt, "template": template})
        return [f" out:{p if isinstance(p, str) else p[-1]['content']} " for p in prompts]

    monkeypatch.setattr("tunewright.eval.generate.generate", fake_generate)
    rows = [EvalRow(1, "raw one", None, "r"), EvalRow(2, "chat", [{"role": "user", "content": "chat"}], "r"),
            EvalRow(3, "raw two", None, "r")]
    outs = answer(Loaded(None, None, "TEMPLATE", system_prompt="Be brief."), rows, Generation())
    assert outs == ["out:raw one", "out:chat", "out:raw two"]  # row order kept, outer space trimmed
    templated, plain = calls
    assert templated == {"prompts": [[{"role": "user", "content": "chat"}]], "raw": False, "system": "Be brief.",
                         "template": "TEMPLATE"}
    assert plain["prompts"] == ["raw one", "raw two"] and plain["raw"] and plain["system"] is None
    calls.clear()
    answer(Loaded(None, None, None), rows, Generation())  # no template: everything is plain text
    assert len(calls) == 1 and calls[0]["prompts"] == ["raw one", "chat", "raw two"]


def test_group_by_scores_each_group_as_its_own_corpus(tmp_path, monkeypatch):
    from tunewright.eval.metrics import compute

    tasks = ["geo", "math", "chat", "math", "geo", "chat"]
    data = write_jsonl(tmp_path / "d.jsonl", [{**r, "task": t} for r, t in zip(ROWS, tasks)])
    answers = {"Name the capital of France.": "Paris.", "Add the numbers.": "Six."}
    monkeypatch.setattr("tunewright.eval.compare.load_candidate", lambda c: c.name)
    monkeypatch.setattr("tunewright.eval.compare.answer",
                        lambda loaded, rows, gen: [answers.get(r.messages[-1]["content"], "x") if loaded == "tuned"
                                                   else "x" for r in rows])
    cfg = load_eval_config(raw={"candidates": [{"name": "base", "model": "m"}, {"name": "tuned", "model": "m"}],
                                "data": {"path": str(data), "group_by": "task"}, "metrics": ["exact_match", "bleu"],
                                "output": {"dir": str(tmp_path), "name": "out"}})
    results = evaluate_candidates(cfg, echo=lambda *_: None).results
    base, tuned = (c["groups"] for c in results["candidates"])
    assert list(tuned) == ["geo", "math", "chat"]
    # each group is its own corpus: corpus BLEU of the group's rows, not a mean of sentence scores
    alone = compute(["exact_match", "bleu"], ["Paris.", "x"], ["Paris.", "Rome."])["corpus"]
    assert tuned["geo"] == {"rows": 2, "exact_match": 0.5, "bleu": pytest.approx(alone["bleu"])}
    assert tuned["math"]["exact_match"] == tuned["chat"]["exact_match"] == base["geo"]["exact_match"] == 0.0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Scores per task" in report
    assert "| task | rows | base: exact_match | base: bleu | tuned: exact_match | tuned: bleu |" in report
    assert "| geo | 2 | 0.000 |" in report
    lines = [json.loads(x) for x in (tmp_path / "out" / "outputs-tuned.jsonl").read_text().splitlines()]
    assert [x["group"] for x in lines] == tasks
    with pytest.raises(DataError, match=r"d.jsonl:1: topic: missing \(data.group_by names it\)"):
        load_rows(EvalData(path=str(data), group_by="topic"))


# ---------------------------------------------------------------- improvement

def test_improvement_is_the_change_over_the_baseline():
    got = improvement({"rouge1": 0.25, "bleu": 0.0, "only_base": 1.0}, {"rouge1": 0.30, "bleu": 12.5, "new": 3.0})
    assert got["rouge1"]["delta"] == pytest.approx(0.05) and got["rouge1"]["relative"] == pytest.approx(0.2)
    assert got["bleu"] == {"delta": 12.5, "relative": None}  # no relative change from zero
    assert set(got) == {"rouge1", "bleu"}
    assert improvement({"x": 2.0}, {"x": 1.0})["x"] == {"delta": -1.0, "relative": -0.5}


# ---------------------------------------------------------------- end to end on two tiny candidates

def test_candidates_are_prompted_with_the_training_template(tiny_model_dir, lora_run):
    base = load_candidate(Candidate(name="base", model=tiny_model_dir("llama"), template="alpaca"))
    tuned = load_candidate(Candidate(name="lora", run=str(lora_run)))
    assert base.template == tuned.template == NAMED["alpaca"]
    plain = load_candidate(Candidate(name="plain", model=tiny_model_dir("llama")))
    assert plain.template is None  # no chat template of its own: prompts go in as plain text


def test_outputs_jsonl_hold_every_prediction_and_its_scores(compared):
    from tunewright.eval.metrics import compute

    cfg, result = compared
    out = result.out_dir
    references = [r["output"] for r in ROWS[1:]]
    for cand in result.results["candidates"]:
        lines = [json.loads(x) for x in (out / cand["outputs"]).read_text().splitlines()]
        assert [x["line"] for x in lines] == [2, 3, 4, 5, 6]
        assert [x["reference"] for x in lines] == references
        assert [x["output"] for x in lines] == result.predictions[cand["name"]]
        # the corpus scores are the metrics of exactly these outputs
        again = compute(cfg.metrics, [x["output"] for x in lines], references)
        assert cand["scores"] == pytest.approx(again["corpus"])
        assert [x["scores"]["chrf"] for x in lines] == pytest.approx(again["per_example"]["chrf"])


def test_the_tuned_candidate_answers_as_tunewright_generate_does(compared, lora_run):
    from tunewright.eval.generate import generate
    from tunewright.models.trained import load_trained

    _, result = compared
    model, tok = load_trained(lora_run)
    prompts = [[{"role": "user", "content": r["instruction"], **({"context": r["input"]} if r["input"] else {})}]
               for r in ROWS[1:]]
    direct = generate(model, tok, prompts, template=tok.chat_template, max_new_tokens=6)
    assert result.predictions["lora"] == [d.strip() for d in direct]


def test_improvement_over_the_first_candidate_in_results(compared):
    _, result = compared
    base, lora = result.results["candidates"]
    assert result.results["baseline"] == "base" and "improvement" not in base
    for key, value in lora["scores"].items():
        delta = value - base["scores"][key]
        assert lora["improvement"][key]["delta"] == pytest.approx(delta)
        rel = lora["improvement"][key]["relative"]
        assert rel == (pytest.approx(delta / abs(base["scores"][key])) if base["scores"][key] else None)
    assert result.results["data"] == {"path": result.results["data"]["path"], "format": "alpaca", "read": 6,
                                      "bad": 0, "skipped": 1, "cut": 0, "used": 5}
    assert len(result.results["samples"]) == 2


def test_an_adapter_on_a_named_base_is_evaluated_end_to_end(tiny_model_dir, lora_run, tmp_path):
    """Candidates `adapter` + `model`: the adapter goes onto the base named there (not the one its
    adapter_config records), prompted with the template it was trained with, generated and scored."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from tunewright.eval.generate import generate
    from tunewright.models.trained import load_trained

    adapter, base = lora_run / "final", tiny_model_dir("llama")
    other = tmp_path / "other-base"  # the base copied under another name, with a different head
    shutil.copytree(base, other)
    weights = load_file(other / "model.safetensors")
    head = "lm_head.weight" if "lm_head.weight" in weights else "model.embed_tokens.weight"
    weights[head] = torch.randn(weights[head].shape, generator=torch.Generator().manual_seed(0))
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    cfg = load_eval_config(raw={
        "candidates": [{"name": "lora", "run": str(lora_run)},
                       {"name": "adapter", "adapter": str(adapter), "model": base},
                       {"name": "other", "adapter": str(adapter), "model": str(other)}],
        "data": {"path": str(write_jsonl(tmp_path / "test.jsonl", ROWS)), "format": "alpaca"},
        "metrics": ["exact_match", "chrf"], "generation": {"max_new_tokens": 6, "batch_size": 6},
        "output": {"dir": str(tmp_path), "name": "out"}})
    result = evaluate_candidates(cfg, echo=lambda *_: None)
    scores = {c["name"]: c["scores"] for c in result.results["candidates"]}
    assert result.results["candidates"][1]["source"] == f"{adapter} on {base}"
    # on the base it was trained on, the adapter answers and scores exactly as its run does
    assert result.predictions["adapter"] == result.predictions["lora"] and scores["adapter"] == scores["lora"]
    assert (result.out_dir / "outputs-adapter.jsonl").is_file()
    # on the other base: that base + the adapter, prompted with the adapter's (alpaca) template
    model, tok = load_trained(adapter, base=str(other))
    assert torch.equal(model.get_output_embeddings().weight, weights[head])
    prompts = [[{"role": "user", "content": r["instruction"], **({"context": r["input"]} if r["input"] else {})}]
               for r in ROWS]
    direct = generate(model, tok, prompts, template=NAMED["alpaca"], max_new_tokens=6)
    assert result.predictions["other"] == [d.strip() for d in direct] != result.predictions["lora"]


# ---------------------------------------------------------------- the command

def test_eval_command_quick_mode(tiny_model_dir, lora_run, tmp_path, capsys):
    from tunewright.cli import main

    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:2])
    code = main(["eval", "--run", str(lora_run), "--data", str(data), "--metrics", "exact_match,rouge1",
                 "--max-new-tokens", "3", "--out", str(tmp_path / "out")])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (cand,) = results["candidates"]
    assert cand["name"] == "lora" and set(cand["scores"]) == {"exact_match", "rouge1"}
    assert len((tmp_path / "out" / "outputs-lora.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "out" / "report.md").is_file() and "lora:" in capsys.readouterr().out


def test_eval_command_config_mode_and_errors(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from tunewright.cli import main

    monkeypatch.chdir(tmp_path)  # quick mode writes to runs/eval under the working folder

    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:2])
    config = tmp_path / "cmp.yaml"
    config.write_text(f"candidates:\n  - {{name: base, model: {tiny_model_dir('llama')}}}\n"
                      f"data: {{path: {data}}}\nmetrics: [exact_match]\ngeneration: {{max_new_tokens: 2}}\n"
                      f"output: {{dir: {tmp_path}}}\n")
    assert main(["eval", str(config)]) == 0
    assert (tmp_path / "cmp" / "outputs-base.jsonl").is_file()  # output name: the config's file name
    capsys.readouterr()

    failures = {
        "no input": ["eval"],
        "both modes": ["eval", str(config), "--model", "x"],
        "bad key": ["eval", str(config), "generation.max_new_tokenz=3"],
        "bad metric": ["eval", "--model", tiny_model_dir("llama"), "--data", str(data), "--metrics", "rogue"],
        "missing data": ["eval", "--model", tiny_model_dir("llama"), "--data", str(tmp_path / "none.jsonl")],
    }
    for what, argv in failures.items():
        assert main(argv) == 2, what
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, what
        if what == "bad key":
            assert 'generation.max_new_tokenz: unknown key (did you mean "max_new_tokens"?)' in err
        if what == "bad metric":
            assert 'unknown metric \'rogue\' (did you mean "rouge"?)' in err
    assert not (tmp_path / "runs").exists()  # nothing written for a failed call


def test_seq2seq_candidate_on_the_bundled_dialogues(tiny_model_dir, tmp_path, monkeypatch):
    """The FLAN-T5 comparison's data through a tiny T5: the encoder reads the recipe's plain prompt."""
    from tunewright.eval.generate import generate
    from tunewright.models.trained import load_trained

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # the config names its data relative to the repository
    t5 = tiny_model_dir("t5")
    cfg = load_eval_config(repo / "recipes" / "eval" / "flan_t5_dialogsum_compare.yaml",
                           [f"candidates=[{{name: zero-shot, model: {t5}}}]", "data.limit=2",
                            "generation.max_new_tokens=4", f"output.dir={tmp_path}"], smoke=True)
    result = evaluate_candidates(cfg, echo=lambda *_: None)
    rows = [json.loads(x) for x in (result.out_dir / "outputs-zero-shot.jsonl").read_text().splitlines()]
    source = (repo / cfg.data.path).read_text(encoding="utf-8").splitlines()
    assert [r["line"] for r in rows] == [97, 98]
    assert [r["prompt"] for r in rows] == [json.loads(source[i])["prompt"] for i in (96, 97)]
    assert set(rows[0]["scores"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    model, tok = load_trained(t5)
    direct = generate(model, tok, [r["prompt"] for r in rows], max_new_tokens=4)
    assert [r["output"] for r in rows] == [d.strip() for d in direct]
