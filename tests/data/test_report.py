"""The `tunewright validate` report: marked examples, EOS coverage, packing, and the whole report
for decoder-only and encoder-decoder data."""

from __future__ import annotations

import json
import re

import pytest

from tunewright.config import ModelConfig, load_config
from tunewright.data.packing import pack, packing_efficiency
from tunewright.data.report import CLOSE, OPEN, eos_coverage, render_marked, render_seq2seq
from tunewright.data.types import IGNORE_INDEX, Encoded
from tunewright.models.load import load_tokenizer
from tunewright.run import build
from tunewright.run import validation_text as validation_report

ROWS = [
    {"instruction": "Why do cats purr?", "output": "Cats purr when they are content."},
    {"instruction": "Name the capital of France.", "output": "Paris."},
    {"instruction": "Add the numbers.", "input": "two plus three", "output": "Five."},
    {"instruction": "Count to five.", "output": "one two three four five"},
]
NO_EOT_TEMPLATE = ("{%- for m in messages -%}{%- if m['role'] == 'user' -%}"
                   "{{ '### Instruction:\\n' + m['content'] + '\\n\\n### Response:\\n' }}"
                   "{%- else -%}{{ m['content'] }}{%- endif -%}{%- endfor -%}")


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(ModelConfig(name=tiny_model_dir("llama")))


def built_for(tmp_path, model: str, *overrides: str):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    raw = {"model": {"name": model}, "data": {"datasets": [{"path": str(data)}], "template": "alpaca",
                                              "cutoff_len": 256}}
    return build(load_config(raw=raw, overrides=list(overrides)), with_model=False)


# ------------------------------------------------------------------ pieces

def test_render_marked_wraps_exactly_the_trained_tokens(tok):
    a, b, c, d = (tok(t, add_special_tokens=False).input_ids for t in ("Q: hi\n", "A: hello", "\nQ: more\n", "A: ok"))
    ids = a + b + c + d + [tok.eos_token_id]
    labels = [IGNORE_INDEX] * len(a) + b + [IGNORE_INDEX] * len(c) + d + [tok.eos_token_id]
    text = render_marked(Encoded(ids, labels), tok)
    assert text == f"Q: hi\n{OPEN}A: hello{CLOSE}\nQ: more\n{OPEN}A: ok</s>{CLOSE}"
    assert render_marked(Encoded(a, [IGNORE_INDEX] * len(a)), tok) == "Q: hi\n"  # nothing trained: no marks


def test_render_seq2seq_shows_encoder_input_and_marked_target(tok):
    src, tgt = (tok(t, add_special_tokens=False).input_ids for t in ("Summarize: a b c", "a b"))
    text = render_seq2seq(Encoded(src, tgt + [IGNORE_INDEX]), tok)
    assert text == f"input:  Summarize: a b c\ntarget: {OPEN}a b{CLOSE}"


def test_eos_coverage_counts_examples_whose_labels_hold_a_stop_id():
    have = Encoded([5, 6, 2], [IGNORE_INDEX, 6, 2])
    masked = Encoded([5, 6, 2], [IGNORE_INDEX, 6, IGNORE_INDEX])  # EOS in the ids but not trained
    other = Encoded([5, 7], [IGNORE_INDEX, 7])
    assert eos_coverage([have, masked, other], [2]) == (1, 3)
    assert eos_coverage([have, masked, other], [2, 7]) == (2, 3)


# ------------------------------------------------------------------ the report

def test_report_of_a_decoder_only_run(tmp_path, tiny_model_dir):
    built = built_for(tmp_path, tiny_model_dir("llama"))
    report = validation_report(built)
    assert report.startswith("== data\n") and "\n".join(built.data.report) in report
    assert "tokenized 4 rows: 4 kept, 0 truncated to 256 tokens, 0 dropped (none)" in report
    lengths = [len(e.input_ids) for e in built.data.train]
    want = packing_efficiency(lengths, pack(lengths, 256), 256)
    assert f"packing efficiency ({len(pack(lengths, 256))} rows of 256 tokens): {want:.1%}  (data.packing is off)" \
        in report
    assert f"padding efficiency (one example a row, padded to the longest): " \
           f"{sum(lengths) / (len(lengths) * max(lengths)):.1%}" in report
    assert "WARNING" not in report and "template tokens added" not in report
    examples = report.split("== examples")[1]
    assert re.findall(r"^-- (\S+) \((\d+) tokens\)$", examples, re.M) == [
        (f"{e.source}:{e.line}", str(len(e.input_ids))) for e in built.data.train[:2]]
    assert f"{OPEN}Cats purr when they are content.</s>{CLOSE}" in examples
    assert f"{OPEN}Paris.</s>{CLOSE}" in examples and "Five." not in examples  # two examples only


def test_report_with_packing_on_and_added_template_tokens(tmp_path, tiny_model_dir):
    built = built_for(tmp_path, tiny_model_dir("llama"), "data.packing=true", "data.template=chatml")
    report = validation_report(built)
    assert re.search(r"packing efficiency \(\d+ rows of 256 tokens\): \d+\.\d%$", report, re.M)
    assert "template tokens added to the tokenizer" in report and "'<|im_start|>'" in report
    assert f"<|im_end|>{CLOSE}" in report  # the end-of-turn marker is trained: no EOS warning
    assert "WARNING" not in report


def test_report_warns_when_no_example_trains_an_end_of_turn_token(tmp_path, tiny_model_dir):
    template = tmp_path / "no_eot.jinja"
    template.write_text(NO_EOT_TEMPLATE)
    report = validation_report(built_for(tmp_path, tiny_model_dir("llama"), f"data.template={template}",
                                         "data.add_eos_token=false"))
    assert "WARNING: 4 of 4 training examples have no end-of-turn/EOS token ['</s>'] in their labels" in report
    # with add_eos_token on, the same template gets EOS appended and trained: no warning
    assert "WARNING" not in validation_report(built_for(tmp_path, tiny_model_dir("llama"), f"data.template={template}"))


def test_report_names_the_phrasing_and_shots_drawn_for_each_example(tmp_path, tiny_model_dir):
    templates = ["Q1 {instruction}", "Q2 {instruction}", "Q3 {instruction}"]
    built = built_for(tmp_path, tiny_model_dir("llama"), f"data.datasets.0.phrasings={json.dumps(templates)}",
                      "data.datasets.0.shots=[1]")
    report = validation_report(built)
    heads = re.findall(r"^-- \S+:(\d+) \(\d+ tokens; phrasing (\d), 1-shot \(lines (\d)\)\)$", report, re.M)
    assert len(heads) == 2
    for (line, phrasing, shown), e in zip(heads, built.data.train):
        assert e.meta["phrasing"] == int(phrasing) and e.meta["exemplars"] == [int(shown)] and line != shown
        assert f"Q{phrasing} " in report  # the chosen template's text is what the example shows
    assert re.search(r"^phrased \S+: 3 phrasings, rows per phrasing \d \d \d; shots 1: 4$", report, re.M)


def test_report_of_an_encoder_decoder_run(tmp_path, tiny_model_dir):
    built = built_for(tmp_path, tiny_model_dir("t5"), "data.template=null")  # T5 reads plain prompts
    report = validation_report(built)
    examples = report.split("== examples")[1]
    assert f"input:  Why do cats purr?</s>\ntarget: {OPEN}Cats purr when they are content.</s>{CLOSE}" in examples
    assert "packing: not used by objective seq2seq" in report and "packing efficiency" not in report
    assert "WARNING" not in report


def test_encoder_decoder_trained_fraction_is_at_most_one(tmp_path, tiny_model_dir):
    data = tmp_path / "long_target.jsonl"
    data.write_text(json.dumps({"instruction": "Count.", "output": "one two three four five six seven eight"}) + "\n")
    raw = {"model": {"name": tiny_model_dir("t5")}, "data": {"datasets": [{"path": str(data)}]}}
    report = validation_report(build(load_config(raw=raw), with_model=False))
    total, trained, pct = re.search(r"tokens: ([\d,]+) total, ([\d,]+) trained \(([\d.]+)%\)", report).groups()
    assert int(trained.replace(",", "")) <= int(total.replace(",", "")) and float(pct) <= 100
