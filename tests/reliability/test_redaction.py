"""Redaction canaries (issue 11, row 6): a hub token, a `?token=` value and `user:pass@` URL
credentials, each placed in a data path, a model name and an eval data path, never reach the console
nor any file tunewright writes (config.yaml, trainer state, tunewright.json, eval results.json,
report.md, outputs jsonl, run reports)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tunewright.cli import main

HF = "hf_" + "Canary" * 5
# (what the user wrote, the part that must never appear again)
PATTERNS = {
    "hf token": (f"/nope/{HF}/x", HF),
    "token query": ("https://host/x?token=CanaryTok123", "CanaryTok123"),
    "url credentials": ("https://user:CanaryPass@host/x", "CanaryPass"),
}
ROWS = [{"instruction": f"Say {i}.", "input": "", "output": "ok " * (1 + i % 3)} for i in range(8)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def everything_written(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


@pytest.fixture
def recipe(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    path = tmp_path / "r.yaml"
    path.write_text(f"model: {{name: {tiny_model_dir('llama')}}}\n"
                    f"data: {{datasets: [{{path: {data}}}], template: alpaca, cutoff_len: 64}}\n"
                    f"method: {{name: lora, r: 2}}\n"
                    f"train: {{batch_size: 2, micro_batch_size: 2, max_steps: 1}}\n"
                    f"output: {{dir: {tmp_path / 'runs'}}}\n")
    return path


def check_clean(secrets: tuple[str, ...], capsys, *roots: Path) -> str:
    """The console since the last check, after asserting no secret is in it nor in a file under `roots`."""
    out, err = capsys.readouterr()
    for secret in secrets:
        assert secret not in out + err
        for root in roots:
            assert secret not in everything_written(root), root
    return err


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("where", ["data path", "model name"])
def test_train_error_line_is_redacted(recipe, tmp_path, capsys, pattern, where, tally):
    text, secret = PATTERNS[pattern]
    key = "data.datasets.0.path" if where == "data path" else "model.name"
    value = text + ("/d.jsonl" if where == "data path" else "")
    assert main(["train", str(recipe), f"{key}={value}"]) == 2
    err = check_clean((secret,), capsys, tmp_path / "runs")
    assert err.startswith("error: ") and err.count("\n") == 1 and "***" in err
    assert not (tmp_path / "runs" / "r").exists()  # stopped before training: nothing written
    tally("security canaries")


@pytest.mark.parametrize("pattern", PATTERNS)
def test_eval_data_path_error_is_redacted(tmp_path, tiny_model_dir, capsys, pattern, tally):
    text, secret = PATTERNS[pattern]
    code = main(["eval", "--model", tiny_model_dir("llama"), "--data", text + "/d.jsonl", "--out", str(tmp_path / "ev")])
    assert code == 2
    err = check_clean((secret,), capsys)
    assert err.startswith("error: ") and "***" in err
    assert not (tmp_path / "ev").exists()
    tally("security canaries")


def test_usage_errors_are_redacted(capsys, tally):
    assert main(["eval", "--limit", HF]) == 2  # click echoes the bad value back
    check_clean((HF,), capsys)
    tally("security canaries")


def secret_folder(tmp_path: Path) -> tuple[str, Path]:
    """A folder whose path holds all three patterns, as the user would write it and as it is on disk
    (`//` is one separator to the OS, so the URL form names a real folder)."""
    written = f"{tmp_path}/https://user:CanaryPass@host/{HF}/q?token=CanaryTok123"
    return written, Path(written)


def test_a_run_and_an_eval_on_secret_paths_write_no_secret(tmp_path, tiny_model_dir, capsys, tally):
    """Everything a successful run and eval write: config.yaml, metrics, checkpoints with their
    trainer state, final/ with tunewright.json, the run report; eval results.json, report.md,
    outputs jsonl. The data lives in a folder named with every pattern."""
    import tunewright

    written, folder = secret_folder(tmp_path)
    data = write_jsonl(folder / "d.jsonl", ROWS)
    assert data.is_file()
    cfg = {"model": {"name": tiny_model_dir("llama")},
           "data": {"datasets": [{"path": f"{written}/d.jsonl"}], "template": "alpaca", "cutoff_len": 64,
                    "val_set_size": 2},
           "method": {"name": "lora", "r": 2},
           "train": {"batch_size": 2, "micro_batch_size": 2, "max_steps": 2},
           "eval": {"steps": 1}, "output": {"dir": str(tmp_path / "runs"), "name": "run", "save_steps": 1}}
    run = tunewright.train(cfg).run_dir
    assert (run / "report.md").is_file() and (run / "final" / "tunewright.json").is_file()
    assert main(["eval", "--run", str(run), "--data", f"{written}/d.jsonl", "--max-new-tokens", "2",
                 "--metrics", "exact_match", "--out", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "results.json").is_file() and (tmp_path / "ev" / "report.md").is_file()
    for secret in (HF, "CanaryTok123", "CanaryPass"):
        assert secret not in everything_written(tmp_path / "runs")
        assert secret not in everything_written(tmp_path / "ev")
    check_clean((HF,), capsys)
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["data"]["path"].endswith("/https://***@host/hf_***/q?token=***/d.jsonl")
    tally("security canaries")
