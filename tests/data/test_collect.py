"""Collecting preferences (data/collect.py): two seeded samples per prompt with their settings, the
terminal labeller driven through the in-process CLI by piped input (resumed where it stopped), a
Label Studio pairwise export written by hand from its documented shape, and a win rate of two eval
candidates with its Wilson interval checked against the formula worked by hand."""

from __future__ import annotations

import io
import json
import math

import pytest

from tunewright.cli import main
from tunewright.config import DataConfig, DataSource
from tunewright.data import collect
from tunewright.data.mixture import load_examples


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _label(monkeypatch, typed: str, *args) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))  # as if piped: input() reads it
    return main(["data", "label", *args])


PAIRS = [{"prompt": f"What is {i} + {i}?", "response_1": str(2 * i), "response_2": f"Maybe {2 * i + 1}."}
         for i in range(4)]


def test_labeller_writes_preference_rows_and_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    pairs, out = _write(tmp_path / "pairs.jsonl", PAIRS), tmp_path / "prefs.jsonl"
    assert _label(monkeypatch, "1\nthree\n2\nquit\n", str(pairs), "--out", str(out)) == 0
    assert "type 1, 2, tie, skip or quit" in capsys.readouterr().out  # a bad key asks again
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["line"], r["chosen"], r["rejected"]) for r in rows] == [(1, "0", "Maybe 1."), (2, "Maybe 3.", "2")]
    # the second session starts at pair 3; the input ends early (EOF) and stops like quit
    assert _label(monkeypatch, "tie\n", str(pairs), "--out", str(out)) == 0
    said = capsys.readouterr().out
    assert "2 of 4 pairs labelled already; 2 to go" in said and "1 left for next time" in said
    assert _label(monkeypatch, "skip\n", str(pairs), "--out", str(out)) == 0
    skipped = [json.loads(line) for line in (tmp_path / "prefs.skipped.jsonl").read_text().splitlines()]
    assert skipped == [{"line": 3, "choice": "tie"}, {"line": 4, "choice": "skip"}]
    assert len(out.read_text().splitlines()) == 2  # ties and skips never become pairs
    assert _label(monkeypatch, "", str(pairs), "--out", str(out)) == 0
    assert "4 of 4 pairs labelled already; 0 to go" in capsys.readouterr().out
    # the output trains as written: format preference
    src = DataSource(path=str(out), format="preference")
    examples, _ = load_examples(src, DataConfig(datasets=[src]))
    assert [e.responses[0][0].content for e in examples] == ["0", "Maybe 3."]


def test_label_studio_pairwise_export_imports(tmp_path, capsys):
    # the shape of Label Studio's JSON export for the Pairwise template (<Pairwise name="pw"
    # toName="text1,text2"/>): one task per pair, the choice in result[].value.selected
    def task(i, annotations):
        return {"id": i, "data": {"prompt": f"Q{i}", "text1": f"left {i}", "text2": f"right {i}"},
                "annotations": annotations}

    def pick(side, cancelled=False):
        return {"id": 1, "was_cancelled": cancelled, "result": [
            {"id": "a1", "from_name": "pw", "to_name": "text1,text2", "type": "pairwise", "value": {"selected": side}}]}

    export = tmp_path / "export.json"
    export.write_text(json.dumps([task(1, [pick("left")]), task(2, [pick("left", cancelled=True), pick("right")]),
                                  task(3, []), task(4, [pick("left", cancelled=True)])]))
    out = tmp_path / "prefs.jsonl"
    assert main(["data", "label", "--from-label-studio", str(export), "--out", str(out)]) == 0
    assert "4 tasks: 2 pairs written" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [("Q1", "left 1", "right 1"),
                                                                          ("Q2", "right 2", "left 2")]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"data": {"prompt": "Q", "text1": "a"}, "annotations": []}]))
    assert main(["data", "label", "--from-label-studio", str(bad), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "[0].data.text2: a string is required" in capsys.readouterr().err


def test_wilson_interval_is_the_formula_worked_by_hand():
    # 7 of 10, z = 1.96: centre (0.7 + 0.19208) / 1.38416 = 0.64444; half-width
    # 1.96 sqrt(0.021 + 0.0009604) / 1.38416 = 0.20980 -> (0.3968, 0.8922), the textbook values
    low, high = collect.wilson(7, 10)
    assert low == pytest.approx(0.39678, abs=5e-5) and high == pytest.approx(0.89222, abs=5e-5)
    assert collect.wilson(0, 20)[0] == 0 and 0 < collect.wilson(0, 20)[1] < 0.2  # no wins: still a width
    assert collect.wilson(20, 20)[1] == pytest.approx(1, abs=1e-12)
    z, n, p = 1.96, 25, 0.6
    by_hand = ((p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n))
    assert collect.wilson(15, 25)[0] == pytest.approx(by_hand, abs=1e-12)


def test_two_candidates_judged_blind_give_a_win_rate_with_ties_half(tmp_path, monkeypatch, capsys):
    a = _write(tmp_path / "outputs-a.jsonl", [{"line": i, "prompt": f"Q{i}", "output": f"A{i}"} for i in range(1, 5)])
    b = _write(tmp_path / "outputs-b.jsonl", [{"line": i, "prompt": f"Q{i}", "output": f"B{i}"} for i in range(1, 5)])
    shown = collect.candidate_pairs(a, b)
    flips = []  # the labeller always types the side that shows candidate a, except on pair 3 (a tie)
    order = iter(range(4))

    def read(prompt=""):
        i = next(order)
        return "tie" if i == 2 else ("2" if flips[i] else "1")

    def echo(text):
        if text.startswith("\n--- pair"):
            flips.append("\n[1]:\nB" in text)  # candidate b shown first

    counts = collect.label(shown, tmp_path / "judged.jsonl", read=read, echo=echo, flip_seed=0)
    assert counts == {"1": 3, "2": 0, "tie": 1, "skip": 0, "left": 0} and any(flips) and not all(flips)
    w = collect.win_rate(tmp_path / "judged.jsonl")
    assert (w["wins"], w["ties"], w["n"], w["win_rate"]) == (3, 1, 4, 3.5 / 4)
    assert w["ci95"] == pytest.approx(list(collect.wilson(3.5, 4)))
    # and through the CLI, typed input piped in: the win rate line
    assert _label(monkeypatch, "1\n1\n1\n1\n", str(a), "--against", str(b), "--out", str(tmp_path / "j2.jsonl")) == 0
    assert "outputs-a.jsonl over outputs-b.jsonl: win rate" in capsys.readouterr().out


def test_pairs_are_two_seeded_samples_with_their_settings(tmp_path, tiny_model_dir):
    prompts = _write(tmp_path / "prompts.jsonl", [{"prompt": "Say something."}, {"prompt": "Name a colour."}])
    args = ["data", "pairs", tiny_model_dir("llama"), "--prompts", str(prompts), "--seed", "3",
            "--max-new-tokens", "6", "--template", "chatml"]
    assert main([*args, "--out", str(tmp_path / "p1.jsonl")]) == 0
    first = collect.read_pairs(tmp_path / "p1.jsonl")
    assert [r["prompt"] for r in first] == ["Say something.", "Name a colour."]
    assert any(r["response_1"] != r["response_2"] for r in first)  # two different draws
    settings = json.loads((tmp_path / "p1.jsonl.settings.json").read_text())
    assert (settings["seed"], settings["max_new_tokens"], settings["temperature"]) == (3, 6, 1.0)
    assert main([*args, "--out", str(tmp_path / "p1.jsonl")]) == 2  # never overwritten unasked
