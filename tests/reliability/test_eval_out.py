"""`tunewright eval --out` never loses a result (issue 11, row 10): a non-empty folder is refused
unless --overwrite; --overwrite removes only what an evaluation wrote, and refuses, listing them,
when other files are there; a training run's own folder is refused even with --overwrite, naming a
folder beside its files instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewright.cli import main

ROWS = [{"instruction": "Say hi.", "input": "", "output": "hi"}, {"instruction": "Say no.", "input": "", "output": "no"}]


@pytest.fixture
def quick(tmp_path, tiny_model_dir):
    """argv of a quick-mode eval of the tiny model on two rows, given an --out folder."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))

    def argv(out: Path, *extra: str) -> list[str]:
        return ["eval", "--model", tiny_model_dir("llama"), "--data", str(data), "--metrics", "exact_match",
                "--max-new-tokens", "2", "--out", str(out), *extra]
    return argv


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def refused(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_a_second_eval_into_one_folder_is_refused_unless_overwrite(quick, tmp_path, capsys, tally):
    out = tmp_path / "ev"
    assert main(quick(out)) == 0
    first = snapshot(out)
    assert {"results.json", "report.md", "metrics.png"} <= set(first)
    refused(capsys, quick(out), "not empty", "--overwrite")
    assert snapshot(out) == first  # the earlier results are intact
    (out / "outputs-old-candidate.jsonl").write_text("{}\n")  # what an earlier eval of another candidate left
    assert main(quick(out, "--overwrite")) == 0
    again = snapshot(out)
    assert "outputs-old-candidate.jsonl" not in again and set(again) == set(first)
    tally("eval folder guards", 2)


def test_overwrite_refuses_a_folder_with_other_files(quick, tmp_path, capsys, tally):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    (out / "keep").mkdir()
    err = refused(capsys, quick(out, "--overwrite"), "notes.txt", "keep")
    assert "results.json" not in err.split("holds")[-1]  # only what is not the eval's is listed
    assert sorted(p.name for p in out.iterdir()) == ["keep", "notes.txt", "results.json"]
    tally("eval folder guards")


def test_a_training_run_folder_is_never_written_into(quick, tmp_path, capsys, tally):
    run = tmp_path / "runs" / "mine"
    (run / "final").mkdir(parents=True)
    for name, text in {"config.yaml": "x: 1\n", "metrics.jsonl": '{"step": 1}\n', "report.md": "# Run\n",
                       "results.json": '{"run": "mine"}\n'}.items():
        (run / name).write_text(text)
    before = snapshot(run)
    for extra in ([], ["--overwrite"]):
        refused(capsys, quick(run, *extra), "training run", str(run / "eval-"))
    assert snapshot(run) == before
    assert main(quick(run / "eval-d")) == 0  # a folder inside the run is fine
    assert snapshot(run) == before
    tally("eval folder guards", 2)


def test_output_overwrite_in_an_eval_config(tmp_path, tiny_model_dir, tally):
    from tunewright.eval.config import load_eval_config

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n")
    config = tmp_path / "cmp.yaml"
    config.write_text(f"candidates: [{{name: base, model: {tiny_model_dir('llama')}}}]\ndata: {{path: {data}}}\n"
                      f"metrics: [exact_match]\ngeneration: {{max_new_tokens: 2}}\noutput: {{dir: {tmp_path}}}\n")
    assert main(["eval", str(config)]) == 0
    assert main(["eval", str(config)]) == 2
    assert main(["eval", str(config), "output.overwrite=true"]) == 0
    assert load_eval_config(config).output.overwrite is False
    tally("eval folder guards")


def test_quick_mode_names_its_folder_after_the_candidate(quick, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = quick(tmp_path)[:-2]  # no --out
    assert main(argv) == 0
    model = Path(argv[argv.index("--model") + 1])
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [f"eval-{model.name}"]
    assert (tmp_path / "runs" / f"eval-{model.name}" / "results.json").is_file()


def test_a_config_without_a_file_never_replaces_an_earlier_report(tmp_path, tiny_model_dir, monkeypatch):
    """A config given as a dict has no file name: its folder is named after its candidates, and a
    second evaluation of the same candidates is refused as not empty instead of replacing the first."""
    from tunewright.errors import ConfigError
    from tunewright.eval.compare import evaluate_candidates
    from tunewright.eval.config import load_eval_config

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n")
    raw = {"candidates": [{"name": "base", "model": tiny_model_dir("llama")}], "data": {"path": str(data)},
           "metrics": ["exact_match"], "generation": {"max_new_tokens": 2}}
    first = evaluate_candidates(load_eval_config(raw=raw), echo=lambda *_: None)
    assert first.out_dir == Path("runs/eval-base")
    report = snapshot(first.out_dir)
    with pytest.raises(ConfigError, match="not empty .*--overwrite"):
        evaluate_candidates(load_eval_config(raw=raw), echo=lambda *_: None)
    assert snapshot(first.out_dir) == report
    other = {**raw, "candidates": [{**raw["candidates"][0], "name": "again"}]}
    assert evaluate_candidates(load_eval_config(raw=other), echo=lambda *_: None).out_dir == Path("runs/eval-again")
