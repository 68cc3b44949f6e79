"""A shortened demo on a tiny model: the same steps, report and files as the real one."""

import json

import pytest


@pytest.mark.slow
def test_demo_writes_its_report(tmp_path, tiny_model_dir):
    from tunewright.lab.demo import run_demo

    results = run_demo(tmp_path, steps=2, model=tiny_model_dir("llama"), n_train=16, n_test=4,
                       max_new_tokens=6, eval_steps=1, template="chatml")
    run = tmp_path / "demo"
    report = (run / "report.md").read_text()
    assert "| base |" in report and "| LoRA-tuned |" in report and "![loss](loss.png)" in report
    assert (run / "loss.png").stat().st_size > 1000
    saved = json.loads((run / "results.json").read_text())
    assert saved["before"] == results["before"] and len(saved["samples"]) == 4
    # the plotted curves are the logged numbers
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [list(p) for p in saved["loss_curves"]["eval"]] == [[m["step"], m["eval_loss"]] for m in logged
                                                                if "eval_loss" in m]
    assert {"exact_match", "rouge_l"} <= set(saved["after"])
    # no test input was trained on
    train_inputs = {json.loads(line)["input"] for line in (tmp_path / "demo-data" / "train.jsonl").read_text().splitlines()}
    assert not train_inputs & {s["input"] for s in saved["samples"]}
