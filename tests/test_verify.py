"""`tunewright verify`: each check passes on a sound setup and fails when its invariant breaks."""

import json

import pytest

from tunewright.config import load_config
from tunewright.verify import run_checks

NO_EOT = ("{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n{% else %}A: {{ m['content'] }}"
          "\n{% endif %}{% endfor %}{% if add_generation_prompt %}A: {% endif %}")


def _cfg(tmp_path, model, *overrides):
    # replies of unequal lengths: micro-batches with unequal target counts
    rows = [{"instruction": f"Spell the number {i}.", "input": "" if i % 2 else f"{i}",
             "output": f"number {i}" + " and on" * (i % 4)} for i in range(12)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {"model": {"name": model}, "data": {"datasets": [{"path": str(data)}], "template": "alpaca", "cutoff_len": 128},
           "method": {"name": "lora", "r": 4, "target_modules": "all-linear"},
           "train": {"batch_size": 4, "micro_batch_size": 2},
           "output": {"dir": str(tmp_path / "runs")}}
    return load_config(raw=raw, overrides=list(overrides))


def _by_name(checks):
    return {c.name: c for c in checks}


def test_every_check_passes_on_a_sound_setup(tmp_path, tiny_model_dir, monkeypatch):
    # on a CPU where `auto` (the config's precision here) picks bf16, verify still checks in fp32
    from tunewright.training import accelerator
    real, asked = accelerator.make_accelerator, []
    monkeypatch.setattr(accelerator, "make_accelerator", lambda p="fp32", cpu=None: asked.append(p) or real(p, cpu))
    monkeypatch.setenv("TUNEWRIGHT_CPU_BF16", "1")
    cfg = _cfg(tmp_path, tiny_model_dir("llama"))
    assert cfg.train.mixed_precision == "auto"
    checks = _by_name(run_checks(cfg))
    assert asked and set(asked) == {"fp32"}, asked  # the accumulation check's and both resume runs'
    assert set(checks) == {"accumulation", "packing", "merge", "template", "eos", "resume"}
    assert checks["resume"].measured.startswith("max |weight diff| 0.00e+00")
    assert all(c.passed for c in checks.values()), [c.line() for c in checks.values()]
    assert "prefix" in checks["template"].measured


def test_accumulation_fails_when_the_loop_normalises_per_micro_batch(tmp_path, tiny_model_dir, monkeypatch):
    """The check runs the loop itself: a loop whose micro-batches are each divided by their own
    target count (a bug test_loop also catches) must fail it, though the objective is sound."""
    import inspect
    import sys
    import types

    from tunewright.training import loop

    source = inspect.getsource(loop)
    right = "acc.backward(loss_sum * (world / n_targets))"
    wrong = "acc.backward(loss_sum * (world / parts.objective.count(batch) / len(micro)))"
    assert source.count(right) == 1, "the loop's normalisation moved: update this test"
    per_micro_batch = types.ModuleType("loop_normalised_per_micro_batch")
    monkeypatch.setitem(sys.modules, per_micro_batch.__name__, per_micro_batch)  # dataclasses look it up
    exec(compile(source.replace(right, wrong), loop.__file__, "exec"), per_micro_batch.__dict__)
    monkeypatch.setattr(loop, "fit", per_micro_batch.fit)
    checks = _by_name(run_checks(_cfg(tmp_path, tiny_model_dir("llama")), resume=False))
    assert not checks["accumulation"].passed and checks["packing"].passed


def test_merge_fails_when_the_method_drops_the_adapter_instead_of_folding_it_in(tmp_path, tiny_model_dir,
                                                                                monkeypatch):
    from tunewright.models.methods import lora

    monkeypatch.setattr(lora, "merge", lambda model: model.unload())  # the base weights alone
    checks = _by_name(run_checks(_cfg(tmp_path, tiny_model_dir("llama")), resume=False))
    assert not checks["merge"].passed and checks["accumulation"].passed


def test_template_fails_when_generation_leaves_out_the_system_prompt(tmp_path, tiny_model_dir, monkeypatch):
    from tunewright.eval import generate

    real = generate.prompt_ids
    monkeypatch.setattr(generate, "prompt_ids", lambda prompt, tokenizer, template, raw=False, system_prompt=None:
                        real(prompt, tokenizer, template, raw))  # trained with a system prompt, prompted without
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "data.system_prompt=Answer in words.", "data.template=chatml")
    checks = _by_name(run_checks(cfg, resume=False))
    assert not checks["template"].passed and "NOT a prefix" in checks["template"].measured
    assert checks["eos"].passed


def test_packing_fails_when_examples_see_each_other(tmp_path, tiny_model_dir, monkeypatch):
    from tunewright.data import packing

    real = packing.collate_packed

    def leaky(rows, pad_id):
        batch = real(rows, pad_id)
        batch.pop("position_ids")  # no boundaries: every example attends to the ones before it
        return batch

    monkeypatch.setattr(packing, "collate_packed", leaky)
    checks = _by_name(run_checks(_cfg(tmp_path, tiny_model_dir("llama")), resume=False))
    assert not checks["packing"].passed and checks["accumulation"].passed


def test_eos_fails_when_nothing_teaches_the_model_to_stop(tmp_path, tiny_model_dir):
    template = tmp_path / "no_eot.jinja"
    template.write_text(NO_EOT)
    checks = _by_name(run_checks(_cfg(tmp_path, tiny_model_dir("llama"), f"data.template={template}",
                                      "data.add_eos_token=false"), resume=False))
    assert not checks["eos"].passed and "0 of" in checks["eos"].measured


def test_resume_fails_when_the_rng_is_not_restored(tmp_path, tiny_model_dir, monkeypatch):
    from tunewright.training import checkpoint

    monkeypatch.setattr(checkpoint, "set_rng_state", lambda state: None)  # dropout masks then differ
    cfg = _cfg(tmp_path, tiny_model_dir("llama"), "method.lora_dropout=0.3")
    checks = _by_name(run_checks(cfg))
    assert not checks["resume"].passed


def test_cli_exit_code(tmp_path, tiny_model_dir, capsys):
    from tunewright.cli import main
    import yaml

    cfg = _cfg(tmp_path, tiny_model_dir("llama"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["verify", str(recipe)]) == 0
    assert "6 passed, 0 failed" in capsys.readouterr().out


@pytest.mark.usefixtures("one_thread")
def test_merge_and_packing_are_skipped_with_the_reason_for_a_method_that_cannot(tmp_path, tiny_model_dir):
    from tunewright.models.methods import METHODS

    name = "prompt"
    raw = _cfg(tmp_path, tiny_model_dir("llama")).model_dump(mode="json")
    raw["method"] = {"name": name}
    checks = _by_name(run_checks(load_config(raw=raw), resume=False))
    assert checks["merge"].passed
    assert checks["merge"].measured == f"skipped: not mergeable ({METHODS.get(name).CANNOT_MERGE})"
    assert checks["packing"].measured.startswith("skipped: data.packing: not possible with method 'prompt'")
    assert checks["accumulation"].passed and checks["template"].passed  # the other checks still run
