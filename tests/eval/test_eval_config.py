"""The eval config: every key checked with "did you mean", candidates well formed, overrides and
smoke mode, and the bundled FLAN-T5 comparison consistent with its training recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunewright.config import load_config
from tunewright.errors import ConfigError
from tunewright.eval.config import load_eval_config, metric_names

REPO = Path(__file__).resolve().parents[2]
COMPARE = REPO / "recipes" / "eval" / "flan_t5_dialogsum_compare.yaml"
RECIPE = REPO / "recipes" / "flan_t5_dialogsum.yaml"


def raw(**changes) -> dict:
    base = {"candidates": [{"name": "base", "model": "m"}, {"name": "lora", "run": "runs/x"}],
            "data": {"path": "d.jsonl"}}
    return {**base, **changes}


def error(config: dict, overrides=()) -> str:
    with pytest.raises(ConfigError) as e:
        load_eval_config(raw=config, overrides=list(overrides))
    return str(e.value)


def test_defaults():
    cfg = load_eval_config(raw=raw())
    assert cfg.metrics == ["rouge"] and cfg.data.format == "alpaca" and cfg.data.skip == 0
    assert cfg.generation.max_new_tokens == 64 and not cfg.generation.do_sample
    assert cfg.out_dir() == Path("runs/eval-base-lora")  # no file to name it after: its candidates
    assert [c.source() for c in cfg.candidates] == ["m", "runs/x"]


@pytest.mark.parametrize("config, line", [
    (raw(generaton={}), 'generaton: unknown key (did you mean "generation"?)'),
    (raw(candidates=[{"name": "a", "model": "m", "adaptor": "x"}]), 'candidates.0.adaptor: unknown key (did you mean "adapter"?)'),
    (raw(data={"path": "d", "limt": 3}), 'data.limt: unknown key (did you mean "limit"?)'),
    (raw(output={"sample": 3}), 'output.sample: unknown key (did you mean "samples"?)'),
    (raw(metrics=["rogue1"]), "metrics: unknown metric 'rogue1' (did you mean \"rouge1\"?)"),
    (raw(data={"path": "d", "format": "alpacca"}), "data.format: unknown data format 'alpacca' (did you mean \"alpaca\"?)"),
])
def test_unknown_names_suggest_the_closest(config, line):
    msg = error(config)
    assert msg == f"<eval config>: {line}" or msg.startswith(f"<eval config>: {line}")
    assert "\n" not in msg


@pytest.mark.parametrize("config, reason", [
    (raw(candidates=[{"name": "a"}]), "give model, adapter or run"),
    (raw(candidates=[{"name": "a", "adapter": "x", "run": "y"}]), "give adapter or run, not both"),
    (raw(candidates=[{"name": "a", "run": "y", "template": "alpaca"}]), "template applies to a plain model only"),
    (raw(candidates=[{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]), "repeated: a"),
    (raw(candidates=[{"name": "../a", "model": "m"}]), "must be a plain file name"),
    (raw(candidates=[]), "at least 1 item"),
    (raw(metrics=["auc"]), "needs class probabilities"),
    (raw(metrics=["bleu", "bleu"]), "metric listed twice"),
    (raw(data={"path": "d", "format": "text"}), "has no reply to compare against"),
    (raw(data={"path": "d", "skip": -1}), "data.skip: Input should be greater than or equal to 0"),
    ({"candidates": [{"name": "a", "model": "m"}]}, "data: Field required"),
])
def test_invalid_values_are_one_line_errors(config, reason):
    assert reason in error(config)


def test_every_registered_text_metric_is_accepted():
    names = metric_names()
    assert {"rouge", "rouge1", "rougeLsum", "bleu", "chrf", "exact_match"} <= set(names) and "auc" not in names
    assert load_eval_config(raw=raw(metrics=names)).metrics == names


def test_overrides_and_smoke(tmp_path):
    path = tmp_path / "cmp.yaml"
    config = raw(smoke={"overrides": ["candidates.0.model=tiny", "data.limit=4", "generation.max_new_tokens=8"]})
    path.write_text(yaml.safe_dump(config))
    cfg = load_eval_config(path, ["generation.max_new_tokens=5", "metrics=[bleu, chrf]"])
    assert cfg.output.name == "cmp" and cfg.generation.max_new_tokens == 5 and cfg.metrics == ["bleu", "chrf"]
    assert cfg.candidates[0].model == "m" and cfg.data.limit is None

    smoke = load_eval_config(path, ["generation.max_new_tokens=5"], smoke=True)
    assert smoke.candidates[0].model == "tiny" and smoke.data.limit == 4
    assert smoke.generation.max_new_tokens == 5  # the user's override wins over the smoke section's
    assert smoke.out_dir() == Path("runs/cmp-smoke")

    with pytest.raises(ConfigError, match="smoke.overrides.0: Input should be a valid string"):
        load_eval_config(raw=raw(smoke={"overrides": [3]}), smoke=True)


def test_the_output_folder_is_named_after_the_file_or_the_candidates(tmp_path):
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(raw()))
    assert load_eval_config(path).out_dir() == Path("runs/cmp")
    assert load_eval_config(path, ["output.name=mine"]).out_dir() == Path("runs/mine")
    # a config given as a dict (the Python API): one folder per set of candidates, not a shared runs/eval
    other = raw(candidates=[{"name": "base", "model": "m"}, {"name": "full", "run": "runs/y"}])
    assert load_eval_config(raw=other).out_dir() == Path("runs/eval-base-full")
    assert load_eval_config(raw=raw(), smoke=True).out_dir() == Path("runs/eval-base-lora-smoke")
    many = raw(candidates=[{"name": f"candidate-{i:03}-" + "x" * 20, "model": "m"} for i in range(20)])
    assert load_eval_config(raw=many).default_name() == f"eval-{many['candidates'][0]['name']}-and-19-more"


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such eval config file"):
        load_eval_config(tmp_path / "none.yaml")
    dup = tmp_path / "dup.yaml"
    dup.write_text("data: {path: a}\ndata: {path: b}\n")
    with pytest.raises(ConfigError, match="duplicate key 'data'"):
        load_eval_config(dup)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections, got list"):
        load_eval_config(listed)


# ---------------------------------------------------------------- the bundled FLAN-T5 comparison

def test_flan_t5_compare_config_matches_its_recipe():
    recipe = load_config(RECIPE)
    cfg = load_eval_config(COMPARE)
    assert COMPARE.read_text().startswith("#")  # opens with the commands to run
    assert [c.name for c in cfg.candidates] == ["zero-shot", "full", "lora"]
    assert cfg.candidates[0].model == recipe.model.name == "google/flan-t5-base"
    assert cfg.candidates[2].run == str(recipe.run_dir())
    assert set(cfg.metrics) <= {"rouge", "rouge1", "rouge2", "rougeL", "rougeLsum"}
    # the test rows are exactly the rows the recipe never trains on
    assert cfg.data.path == recipe.data.datasets[0].path and cfg.data.format == recipe.data.datasets[0].format
    assert cfg.data.skip == recipe.data.training_size
    rows = (REPO / cfg.data.path).read_text(encoding="utf-8").splitlines()
    assert 100 <= len(rows) and len(rows) - cfg.data.skip >= 10

    smoke, recipe_smoke = load_eval_config(COMPARE, smoke=True), load_config(RECIPE, smoke=True)
    assert smoke.candidates[0].model == recipe.smoke.model == "tiny-t5"
    assert smoke.candidates[2].run == str(recipe_smoke.run_dir())
    full = load_config(RECIPE, ["method={name: full}", "output.name=flan_t5_dialogsum_full"], smoke=True)
    assert full.method.name == "full" and smoke.candidates[1].run == str(full.run_dir())


def test_flan_t5_recipe_is_the_course_setting():
    recipe = load_config(RECIPE)
    m = recipe.method
    assert (m.name, m.r, m.lora_alpha, m.lora_dropout, sorted(m.target_modules)) == ("lora", 32, 32, 0.05, ["q", "v"])
    import json
    first = json.loads((REPO / recipe.data.datasets[0].path).read_text(encoding="utf-8").splitlines()[0])
    assert first["prompt"].startswith("Summarize the following conversation.\n\n")
    assert first["prompt"].endswith("\n\nSummary: ") and first["completion"].strip()


def test_metric_options_are_checked_against_the_listed_metrics():
    cfg = load_eval_config(raw=raw(metrics=["rouge", "bleu"],
                                   metric_options={"rouge": {"use_stemmer": True}, "bleu": {"tokenize": "intl"}}))
    assert cfg.metric_options["rouge"] == {"use_stemmer": True}
    assert 'metric_options.rouge.use_stemer: unknown option (did you mean "use_stemmer"?); rouge takes ' \
           "use_stemmer, precision_recall" in error(raw(metric_options={"rouge": {"use_stemer": True}}))
    assert "metric_options.bleu: 'bleu' is not in metrics ['rouge']" in error(raw(metric_options={"bleu": {}}))


def test_shots_need_a_file_and_a_count():
    assert load_eval_config(raw=raw(data={"path": "d.jsonl", "shots": 2, "shots_from": "t.jsonl"})).data.shots == 2
    assert "data.shots: 2 examples need data.shots_from" in error(raw(data={"path": "d.jsonl", "shots": 2}))
    assert "data.shots_from is set but data.shots is 0" in error(raw(data={"path": "d.jsonl", "shots_from": "t.jsonl"}))


@pytest.mark.parametrize("path", sorted((REPO / "recipes" / "eval").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_bundled_eval_config_validates_with_and_without_smoke(path):
    cfg = load_eval_config(path)
    assert cfg.output.name == path.stem and path.read_text().startswith("#")
    smoke = load_eval_config(path, smoke=True)
    assert smoke.output.name == f"{path.stem}-smoke"
    if cfg.smoke.overrides:  # a smoke mode runs offline, on tiny models
        assert all(c.model is None or c.model.startswith("tiny-") for c in smoke.candidates)
