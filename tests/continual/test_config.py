"""The continual config is validated like a run config: one line per bad key with did-you-mean,
`key=value` overrides, `--smoke`; the head's labels are the union of the tasks'."""

from __future__ import annotations

import pytest

from tunewright.continual.config import load_continual_config
from tunewright.errors import ConfigError


def test_bad_keys_are_one_line_each_with_did_you_mean(sequence_raw):
    raw = sequence_raw(method={"name": "lora", "rr": 3}, strategies={"ewk": {}, "replay": {"ratoi": 0.2}},
                       trian={}, scenario="class_incremantal")
    with pytest.raises(ConfigError) as err:
        load_continual_config(raw=raw)
    lines = str(err.value).splitlines()
    assert '<config>: method.rr: unknown key (did you mean "r"?)' in lines
    assert '<config>: strategies.ewk: unknown key (did you mean "ewc"?)' in lines
    assert '<config>: strategies.replay.ratoi: unknown key (did you mean "ratio"?)' in lines
    assert '<config>: trian: unknown key (did you mean "train"?)' in lines
    assert any(line.startswith("<config>: scenario: Input should be 'class_incremental' or 'task_incremental'")
               for line in lines)


@pytest.mark.parametrize("change, message", [
    ({"tasks": "one"}, "tasks: Input should be a valid list"),
    ({"strategies": {"ewc": {"previous": "x"}}}, "strategies.ewc.previous: the sequence sets it"),
])
def test_values_that_cannot_work_are_refused(sequence_raw, change, message):
    with pytest.raises(ConfigError, match=message):
        load_continual_config(raw=sequence_raw(**change))


def test_repeated_task_names_and_one_task_are_refused(sequence_raw):
    raw = sequence_raw()
    with pytest.raises(ConfigError, match="task names must differ; repeated: sentiment"):
        load_continual_config(raw={**raw, "tasks": [raw["tasks"][0]] * 2})
    with pytest.raises(ConfigError, match="tasks: List should have at least 2 items"):
        load_continual_config(raw={**raw, "tasks": raw["tasks"][:1]})


def test_overrides_smoke_and_the_union_of_labels(tmp_path, sequence_raw):
    import yaml
    path = tmp_path / "forgetting.yaml"
    path.write_text(yaml.safe_dump({**sequence_raw(), "output": {"dir": str(tmp_path / "runs")}}))
    cfg = load_continual_config(path, ["strategies.ewc.weight=50", "tasks.1.labels=[sci, sport]"])
    assert cfg.strategies.ewc.weight == 50 and cfg.output.name == "forgetting"
    assert cfg.labels() == ["neg", "pos", "sci", "sport"]
    smoke = load_continual_config(path, smoke=True)
    assert (smoke.model.name, smoke.train.max_steps, smoke.output.name) == ("tiny-llama", 6, "forgetting-smoke")
