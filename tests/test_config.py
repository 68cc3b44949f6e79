"""config.py as users meet it: typos get "did you mean", errors name the key path (one
`file: key: reason` line each), `a.b=value` overrides, keys and methods that are not supported yet
are refused, and the defaults (method lora, run name = recipe file name) hold."""

from __future__ import annotations

import copy

import pytest
import yaml

from tunewright.config import (DataSource, EarlyStopping, RunConfig, apply_overrides, dump_config,
                               load_config, parse_config)
from tunewright.errors import ConfigError, TunewrightError

BASE = {"data": {"datasets": [{"path": "train.jsonl"}]}}
RECIPE = "data:\n  datasets:\n    - path: train.jsonl\n"


def config(overrides: list[str] | None = None, **sections) -> RunConfig:
    """BASE plus `sections` (merged over it), validated with `overrides` applied."""
    raw = copy.deepcopy(BASE)
    raw.update(copy.deepcopy(sections))
    return load_config(raw=raw, overrides=overrides)


def error(overrides: list[str] | None = None, **sections) -> str:
    with pytest.raises(ConfigError) as info:
        config(overrides, **sections)
    return str(info.value)


def recipe(tmp_path, text: str, name: str = "my_recipe.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- unknown keys: did you mean

@pytest.mark.parametrize("sections, line", [
    ({"dta": {}}, 'dta: unknown key (did you mean "data"?)'),
    ({"model": {"nmae": "x"}}, 'model.nmae: unknown key (did you mean "name"?)'),
    ({"data": {"datasets": [{"path": "a", "fromat": "alpaca"}]}},
     'data.datasets.0.fromat: unknown key (did you mean "format"?)'),
    ({"data": {"datasets": [{"path": "a"}], "eval_datasets": [{"path": "b", "splt": "x"}]}},
     'data.eval_datasets.0.splt: unknown key (did you mean "split"?)'),
    ({"data": {"datasets": [{"path": "a"}], "cutof_len": 8}},
     'data.cutof_len: unknown key (did you mean "cutoff_len"?)'),
    ({"method": {"rr": 4}}, 'method.rr: unknown key (did you mean "r"?)'),
    ({"method": {"name": "lora", "lora_alfa": 4}}, 'method.lora_alfa: unknown key (did you mean "lora_alpha"?)'),
    ({"method": {"name": "selective", "patern": ["x"]}}, 'method.patern: unknown key (did you mean "patterns"?)'),
    ({"objective": {"chunk_sise": 8}}, 'objective.chunk_sise: unknown key (did you mean "chunk_size"?)'),
    ({"train": {"learning_rat": 0.1}}, 'train.learning_rat: unknown key (did you mean "learning_rate"?)'),
    ({"eval": {"early_stopping": {"patiance": 2}}},
     'eval.early_stopping.patiance: unknown key (did you mean "patience"?)'),
    ({"output": {"save_step": 5}}, 'output.save_step: unknown key (did you mean "save_steps"?)'),
])
def test_unknown_key_at_every_level_suggests_the_closest(sections, line):
    assert error(**sections) == f"<config>: {line}"


def test_unknown_key_without_a_close_match_has_no_suggestion():
    assert error(train={"zzzz": 1}) == "<config>: train.zzzz: unknown key"


def test_lora_keys_under_another_method_are_errors_not_ignored():
    assert error(method={"name": "full", "r": 4}) == "<config>: method.r: unknown key"


def test_every_error_is_reported_on_its_own_line_with_the_file(tmp_path):
    path = recipe(tmp_path, RECIPE + "train:\n  learning_rat: 0.1\n  batch_size: abc\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert sorted(lines) == sorted([
        f'{path}: train.learning_rat: unknown key (did you mean "learning_rate"?)',
        f"{path}: train.batch_size: Input should be a valid integer, unable to parse string as an "
        "integer (got 'abc')",
    ])
    assert isinstance(info.value, TunewrightError) and info.value.exit_code == 2


# ---------------------------------------------------------------- type errors name the key path

@pytest.mark.parametrize("sections, prefix, got", [
    ({"train": {"batch_size": "abc"}}, "train.batch_size: Input should be a valid integer", "'abc'"),
    ({"train": {"learning_rate": "fast"}}, "train.learning_rate: Input should be a valid number", "'fast'"),
    ({"data": {"datasets": [{"path": "a", "weight": "heavy"}]}},
     "data.datasets.0.weight: Input should be a valid number", "'heavy'"),
    ({"eval": {"early_stopping": {"patience": "x"}}}, "eval.early_stopping.patience: Input should be a valid integer", "'x'"),
    # the union tag pydantic puts in the location (method.lora.r) is not shown to users
    ({"method": {"r": "x"}}, "method.r: Input should be a valid integer", "'x'"),
    ({"train": {"report_to": ["foo"]}}, "train.report_to.0: Input should be 'tensorboard', 'wandb' or 'mlflow'", "'foo'"),
    ({"model": {"dtype": "fp8"}}, "model.dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'", "'fp8'"),
    ({"train": {"micro_batch_size": 0}}, "train.micro_batch_size: Input should be greater than 0", "0"),
    ({"data": {"datasets": []}}, "data.datasets: List should have at least 1 item", None),
])
def test_type_and_range_errors_name_the_key_path(sections, prefix, got):
    message = error(**sections)
    assert message.startswith(f"<config>: {prefix}")
    if got is not None:
        assert message.endswith(f"(got {got})")
    assert "\n" not in message


def test_missing_data_section_is_named():
    with pytest.raises(ConfigError, match=r"^<config>: data: Field required$"):
        load_config(raw={})


def test_union_typed_key_error_names_only_the_users_key():
    message = error(method={"target_modules": 5})
    assert message.startswith("<config>: method.target_modules: ")
    assert "\n" not in message


def test_bool_for_an_int_key_is_a_type_error():
    assert "train.max_steps" in error(["train.max_steps=true"])


# ---------------------------------------------------------------- a.b=value overrides

def test_override_replaces_a_value_from_the_file(tmp_path):
    path = recipe(tmp_path, RECIPE + "train:\n  learning_rate: 0.1\n  seed: 3\n")
    cfg = load_config(path, ["train.learning_rate=1e-4"])
    assert cfg.train.learning_rate == 1e-4 and cfg.train.seed == 3


def test_override_values_are_parsed_as_yaml():
    cfg = config(["train.report_to=[tensorboard]", "model.tokenizer=null", "train.max_steps=7",
                  "data.template=chatml", "data.system_prompt='Be brief: one line.'"])
    assert cfg.train.report_to == ["tensorboard"] and cfg.model.tokenizer is None
    assert cfg.train.max_steps == 7 and cfg.data.template == "chatml"
    assert cfg.data.system_prompt == "Be brief: one line."  # quoted: `a: b` alone is a YAML mapping


def test_override_creates_missing_nested_sections():
    cfg = config(["eval.steps=5", "eval.early_stopping.patience=2"])
    assert cfg.eval.early_stopping == EarlyStopping(patience=2)


def test_override_reaches_list_items_by_index():
    cfg = config(["data.datasets.0.format=messages"],
                 data={"datasets": [{"path": "a.jsonl"}, {"path": "b.jsonl"}]})
    assert [d.format for d in cfg.data.datasets] == ["messages", "alpaca"]
    cfg = config(["data.datasets.1.weight=2"], data={"datasets": [{"path": "a.jsonl"}, {"path": "b.jsonl"}]})
    assert cfg.data.datasets[1] == DataSource(path="b.jsonl", weight=2)


@pytest.mark.parametrize("override, message", [
    ("data.datasets.1.path=x", "override data.datasets.1.path: data.datasets has no item 1"),
    ("data.datasets.x.path=x", "override data.datasets.x.path: data.datasets has no item x"),
    ("data.datasets.-1.path=x", "override data.datasets.-1.path: data.datasets has no item -1"),
    ("data.datasets.0.path.x=1", "override data.datasets.0.path.x: data.datasets.0.path is not a section"),
    ("train.seed", "override 'train.seed': expected key.sub=value"),
    ("=3", "override '=3': expected key.sub=value"),
])
def test_bad_override_paths_are_refused(override, message):
    assert error([override]) == message


def test_override_with_unparsable_value_is_refused():
    assert error(["train.seed=["]).startswith("override train.seed: cannot parse value '['")


def test_override_value_is_type_checked():
    assert error(["train.batch_size=abc"]).startswith(
        "<config>: train.batch_size: Input should be a valid integer")
    assert error(["train.batch_size=4.5"]).startswith(
        "<config>: train.batch_size: Input should be a valid integer, got a number with a fractional part")


def test_override_typo_gets_did_you_mean():
    assert error(["train.lerning_rate=0.1"]) == (
        '<config>: train.lerning_rate: unknown key (did you mean "learning_rate"?)')


def test_apply_overrides_sets_nested_values_in_the_raw_dict():
    raw = apply_overrides({"a": {"b": [1, 2]}}, ["a.b.1=x", "a.c.d=true"])
    assert raw == {"a": {"b": [1, "x"], "c": {"d": True}}}


def test_load_config_leaves_the_callers_dict_alone():
    raw = copy.deepcopy(BASE)
    load_config(raw=raw, overrides=["train.seed=1"])
    assert raw == BASE


# ---------------------------------------------------------------- not supported yet

def test_quantized_loading_settings_that_cannot_work_are_refused():
    assert "choose one" in error(model={"load_in_4bit": True, "load_in_8bit": True})
    assert "set model.load_in_4bit: true too" in error(model={"quantization": {"quant_type": "fp4"}})
    assert "quantized and frozen; use method.name: lora" in error(model={"load_in_8bit": True}, method={"name": "full"})
    assert config(model={"load_in_4bit": True, "quantization": {"quant_type": "fp4"}}).model.quantization.quant_type == "fp4"


@pytest.mark.parametrize("name, reason", [
    ("qlora", "use `name: lora` with `model.load_in_4bit: true` (QLoRA: an NF4 base, double quantization)"),
    ("dora", "use `name: lora` with `use_dora: true`"),
    ("adapter", "use `name: bottleneck` (Houlsby/Pfeiffer bottleneck adapters)"),
    ("pissa", "use `name: lora` with `init_lora_weights: pissa`"),
    ("longlora", "not supported yet (LongLoRA's shifted sparse attention is not built)"),
])
def test_planned_methods_are_refused_with_a_reason(name, reason):
    assert error(method={"name": name}) == f"<config>: method.name: method {name!r}: {reason}"


def test_unknown_method_lists_the_known_ones():
    assert error(["method.name=lroa"]) == (
        "<config>: method.name: unknown method 'lroa' (did you mean \"lora\"?); known: bottleneck, cola, full, ia3, lora, "
        "prefix, prompt, selective")


# ---------------------------------------------------------------- defaults

# ---------------------------------------------------------------- regularizers: a list keyed by name

@pytest.mark.parametrize("regularizers, line", [
    ([{"name": "l2_sp", "wieght": 0.1}], 'regularizers.0.wieght: unknown key (did you mean "weight"?)'),
    ([{"name": "l2sp"}], 'regularizers.0.name: unknown regularizer \'l2sp\' (did you mean "l2_sp"?); known: ewc, l2_sp, mas, si'),
    ([{"weight": 0.1}], "regularizers.0.name: Field required; known: ewc, l2_sp, mas, si"),
    ([{"name": "l2_sp", "weight": "strong"}],
     "regularizers.0.weight: Input should be a valid number, unable to parse string as a number (got 'strong')"),
    ([{"name": "l2_sp", "weight": -1}], "regularizers.0.weight: Input should be greater than or equal to 0 (got -1)"),
    ([{"name": "l2_sp"}, {"name": "l2_sp", "weight": 2}],
     "regularizers: 'l2_sp' is listed twice (items 0 and 1); give each regularizer once"),
])
def test_regularizer_errors_name_the_item_and_suggest(regularizers, line):
    assert error(regularizers=regularizers) == f"<config>: {line}"


def test_regularizers_default_to_none_and_are_set_from_yaml_or_overrides(tmp_path):
    assert config().regularizers == []
    cfg = load_config(recipe(tmp_path, RECIPE + "regularizers:\n  - {name: l2_sp, weight: 0.5}\n"),
                      ["regularizers.0.weight=0.25"])
    assert [(r.name, r.weight) for r in cfg.regularizers] == [("l2_sp", 0.25)]
    assert error(["regularizers.0.wieght=1"], regularizers=[{"name": "l2_sp"}]) == (
        '<config>: regularizers.0.wieght: unknown key (did you mean "weight"?)')


def test_method_defaults_to_lora():
    cfg = config()
    assert cfg.method.name == "lora" and cfg.method.r == 8 and cfg.method.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("sections, overrides", [
    ({"method": {"r": 16}}, None),
    ({}, ["method.r=16"]),
])
def test_lora_keys_without_a_name_mean_lora(sections, overrides):
    cfg = config(overrides, **sections)
    assert cfg.method.name == "lora" and cfg.method.r == 16


def test_other_methods_are_chosen_by_name():
    assert config(method={"name": "full"}).method.name == "full"
    cfg = config(method={"name": "selective", "bias_only": True})
    assert cfg.method.name == "selective" and cfg.method.bias_only


def test_run_name_defaults_to_the_recipe_file_stem(tmp_path):
    path = recipe(tmp_path, RECIPE, "alpaca_lora.yaml")
    cfg = load_config(path)
    assert cfg.output.name == "alpaca_lora"
    assert cfg.run_dir().as_posix() == "runs/alpaca_lora"


def test_explicit_run_name_wins_over_the_file_stem(tmp_path):
    path = recipe(tmp_path, RECIPE + "output:\n  name: from_yaml\n", "alpaca_lora.yaml")
    assert load_config(path).output.name == "from_yaml"
    assert load_config(path, ["output.name=from_cli"]).output.name == "from_cli"


def test_config_without_a_file_has_no_run_name():
    cfg = config()
    assert cfg.output.name is None and cfg.run_dir().as_posix() == "runs/run"


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "a\\b", "", "/etc"])
def test_run_name_cannot_leave_the_runs_folder(name):
    message = error(output={"name": name})
    assert message.startswith("<config>: output.name: run name ") and "plain folder name" in message


def test_run_name_path_traversal_is_refused_from_the_command_line(tmp_path):
    with pytest.raises(ConfigError, match=r"output\.name: run name '\.\./x'"):
        load_config(recipe(tmp_path, RECIPE), ["output.name=../x"])
    assert config(output={"name": "run-2_v1.0"}).output.name == "run-2_v1.0"


# ---------------------------------------------------------------- cross-field rules

@pytest.mark.parametrize("batch, micro", [(6, 4), (4, 8), (10, 3)])
def test_batch_size_must_be_a_multiple_of_micro_batch_size(batch, micro):
    message = error(train={"batch_size": batch, "micro_batch_size": micro})
    assert (f"train.batch_size ({batch}) must be a multiple of train.micro_batch_size ({micro})"
            in message)


@pytest.mark.parametrize("batch, micro", [(8, 4), (8, 8), (12, 3), (1, 1)])
def test_batch_size_multiples_are_accepted(batch, micro):
    cfg = config(train={"batch_size": batch, "micro_batch_size": micro})
    assert cfg.train.batch_size // cfg.train.micro_batch_size == batch // micro


def test_mutually_exclusive_keys_are_refused():
    assert "give train.warmup_steps or train.warmup_ratio, not both" in error(
        train={"warmup_steps": 3, "warmup_ratio": 0.1})
    assert "give either data.eval_datasets or data.val_set_size, not both" in error(
        data={"datasets": [{"path": "a"}], "eval_datasets": [{"path": "b"}], "val_set_size": 0.1})
    assert "selective needs at least one of" in error(method={"name": "selective"})


# ---------------------------------------------------------------- reading the file

def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = recipe(tmp_path, RECIPE + "train:\n  batch_size: 8\n   seed: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:6: invalid YAML: ")
    assert "\n" not in str(info.value)


def test_unclosed_flow_mapping_names_file_and_line(tmp_path):
    path = recipe(tmp_path, "data: {datasets: [{path: a.jsonl}]\n")
    with pytest.raises(ConfigError, match=r":2: invalid YAML: "):
        load_config(path)


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such config file$"):
        load_config(tmp_path / "nope.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("data:\n  system_prompt: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text"):
        load_config(latin1)
    with pytest.raises(ConfigError, match=r"list\.yaml: the config must be a mapping of sections, got list"):
        load_config(recipe(tmp_path, "- a\n- b\n", "list.yaml"))


def test_duplicate_yaml_key_is_refused(tmp_path):
    path = recipe(tmp_path, RECIPE + "train:\n  seed: 1\ntrain:\n  max_steps: 5\n")
    with pytest.raises(ConfigError, match=r":6: .*train"):
        load_config(path)


def test_dumped_config_loads_back_to_the_same_config(tmp_path):
    cfg = load_config(recipe(tmp_path, RECIPE + "method:\n  r: 4\n"), ["eval.steps=5", "eval.early_stopping.patience=2"])
    text = dump_config(cfg)
    assert parse_config(yaml.safe_load(text)) == cfg
    assert "lora_alpha: 16" in text  # every default is written out


# ---------------------------------------------------------------- train.mixed_precision: fp32, and `no`

@pytest.mark.parametrize("written", ["mixed_precision: no", "mixed_precision: 'no'", "mixed_precision: false",
                                     "mixed_precision: off", "mixed_precision: fp32"])
def test_mixed_precision_no_is_fp32_however_yaml_reads_it(tmp_path, written):
    # an unquoted `no` (and `off`) is the boolean false to YAML; before fp32 existed it was refused
    cfg = load_config(recipe(tmp_path, RECIPE + f"train:\n  {written}\n"))
    assert cfg.train.mixed_precision == "fp32"
    assert "mixed_precision: fp32" in dump_config(cfg)  # the name config.yaml writes


@pytest.mark.parametrize("override", ["train.mixed_precision=no", "train.mixed_precision='no'",
                                      "train.mixed_precision=false", "train.mixed_precision=fp32"])
def test_mixed_precision_no_on_the_command_line(override):
    assert config([override]).train.mixed_precision == "fp32"


def test_an_old_config_yaml_with_mixed_precision_no_still_loads(tmp_path):
    fp32 = ["train.mixed_precision=fp32"]
    old = dump_config(config(fp32)).replace("mixed_precision: fp32", "mixed_precision: 'no'")  # as runs saved it
    assert "mixed_precision: 'no'" in old
    assert load_config(recipe(tmp_path, old, "config.yaml")) == config(fp32, output={"name": "config"})


@pytest.mark.parametrize("value", ["true", "fp64"])
def test_other_mixed_precision_values_are_refused_naming_the_key(value):
    assert error([f"train.mixed_precision={value}"]).startswith("<config>: train.mixed_precision: Input should be 'auto'")
