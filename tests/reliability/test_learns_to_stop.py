"""A short SFT teaches a model that does not stop on its own to end its answers with EOS; the
negative control (nothing trains an end-of-turn token) is caught by validate's check and does not."""

import json

import pytest
import torch

import tunewright
from tunewright.config import load_config

NO_EOT = ("{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n{% else %}A: {{ m['content'] }}"
          "{% endif %}{% endfor %}{% if add_generation_prompt %}A: {% endif %}")


def _cfg(tmp_path, model, name, *overrides):
    rows = [{"instruction": f"Greet person number {i}.", "input": "", "output": "hello there"} for i in range(40)]
    data = tmp_path / "greet.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {"model": {"name": model},
           "data": {"datasets": [{"path": str(data)}], "template": "alpaca", "cutoff_len": 64},
           "method": {"name": "full"},
           "train": {"batch_size": 8, "micro_batch_size": 8, "max_steps": 25, "learning_rate": 3e-3},
           "output": {"dir": str(tmp_path / "runs"), "name": name}}
    return load_config(raw=raw, overrides=list(overrides))


def _stop_rate(final_dir, max_new_tokens=12) -> float:
    from tunewright.eval.generate import prompt_ids
    from tunewright.models.trained import load_trained

    model, tok = load_trained(final_dir)
    stops = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
                else [model.generation_config.eos_token_id])
    ended = 0
    prompts = [f"Greet person number {i}." for i in range(100, 120)]  # never seen in training
    for p in prompts:
        ids = torch.tensor([prompt_ids(p, tok, tok.chat_template)])
        out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=list(stops), pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        ended += any(t in stops for t in out)
    return ended / len(prompts)


@pytest.mark.slow
def test_sft_teaches_stopping_and_the_negative_control_is_caught(tmp_path, tiny_model_dir):
    from tunewright.verify import run_checks

    model = tiny_model_dir("llama")
    good = tunewright.train(_cfg(tmp_path, model, "good"))
    assert _stop_rate(good.final_dir) >= 0.95

    template = tmp_path / "no_eot.jinja"
    template.write_text(NO_EOT)
    control = _cfg(tmp_path, model, "control", f"data.template={template}", "data.add_eos_token=false")
    eos_check = {c.name: c for c in run_checks(control)}["eos"]
    assert not eos_check.passed  # validate/verify warn before any training
    bad = tunewright.train(control)
    assert _stop_rate(bad.final_dir) < 0.95
