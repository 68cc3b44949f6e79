"""Generative replay: before the second task, pseudo-rows sampled from the first task's model (its
body under the base's LM head) and labelled by its classifier among the first task's classes, mixed
in at `ratio`; sampled again on a rerun, they are the same, so a sequence stopped in its second task
resumes bit-exact (weights and R)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tunewright.continual import replay
from tunewright.continual.config import load_continual_config
from tunewright.continual.generative import pretask_language_model
from tunewright.continual.sequence import run_sequence


def test_pseudo_rows_are_the_pretask_models_and_resume_is_exact(sequence_raw, tiny_model_dir, tmp_path):
    from tunewright.config import DataConfig, DataSource
    from tunewright.data.mixture import load_examples
    from tunewright.eval.predict import load_classifier, predict_examples
    from tunewright.models.load import ModelConfig, load_model

    model_dir = tiny_model_dir("llama")
    cfg = load_continual_config(raw=sequence_raw(
        model={"name": model_dir}, strategies={"generative_replay": {"samples": 8, "length": 6, "ratio": 0.5}},
        output={"dir": str(tmp_path / "runs"), "name": "seq", "save_steps": 2}))
    whole = run_sequence(cfg, "generative_replay", say=lambda *a: None)
    folder = tmp_path / "runs" / "seq" / "generative_replay"
    first, second = folder / "0-sentiment" / "final", folder / "1-topics"

    # the pseudo-rows' labels are the first task's classifier's predictions among its classes
    pseudo = folder / "generative-1.jsonl"
    src = DataSource(path=str(pseudo), format="classification")
    examples = load_examples(src, DataConfig(datasets=[src]))[0]
    assert len(examples) == 8
    classifier, tokenizer = load_classifier(first)
    predicted = [max(["neg", "pos"], key=p["probabilities"].get) for p in predict_examples(classifier, tokenizer,
                                                                                           examples)]
    assert [p["reference"] for p in predict_examples(classifier, tokenizer, examples)] == predicted
    source = yaml.safe_load((second / "config.yaml").read_text())["data"]["datasets"][1]
    assert source["path"] == str(pseudo) and source["weight"] == pytest.approx(replay.mix_weight(16, 8, 0.5))
    assert whole["extra_bytes"] == pseudo.stat().st_size

    # the generator: the first task's body under the base's LM head (not the base's body)
    lm = pretask_language_model(first, cfg.model)
    ids = torch.tensor([tokenizer("good ball atom")["input_ids"]])
    with torch.no_grad():
        hidden = classifier.base_model(input_ids=ids).last_hidden_state
        torch.testing.assert_close(lm(input_ids=ids).logits, lm.lm_head(hidden), rtol=0, atol=0)
        base = load_model(ModelConfig(name=model_dir), "causal_lm").eval()
        assert not torch.allclose(lm(input_ids=ids).logits[..., :base.config.vocab_size], base(input_ids=ids).logits)

    # stopped after step 2 of the second task, then run again: the same pseudo-rows, weights and R
    weights, rows = load_file(second / "final" / "model.safetensors"), pseudo.read_bytes()
    shutil.rmtree(second / "final")
    shutil.rmtree(second / "checkpoints" / "step-4")
    pseudo.write_text("")  # sampled again, not read back
    record = json.loads((folder / "sequence.json").read_text())
    cut = {**record, "R": record["R"][:1], "seconds": record["seconds"][:1]}
    (folder / "sequence.json").write_text(json.dumps(cut))
    again = run_sequence(cfg, "generative_replay", say=lambda *a: None)
    assert again["R"] == whole["R"] and pseudo.read_bytes() == rows
    resumed = load_file(second / "final" / "model.safetensors")
    assert resumed.keys() == weights.keys() and all(torch.equal(resumed[k], weights[k]) for k in weights)
