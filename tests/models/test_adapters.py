"""Several adapters on one base (models/adapters.py): named, switched, switched off; LoRA adapters
combined; an adapter written by plain peft loads with a base given."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from peft import IA3Config, LoraConfig, PeftModel, PromptTuningConfig, get_peft_model

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.adapters import BASE, active, combine, load_adapters, parse_adapters
from tunewright.models.load import load_model
from tunewright.models.methods import METHODS
from tunewright.models.params import perturb_trainable
from tunewright.models.trained import load_trained

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[1, 5, 9, 7, 3, 11], [1, 8, 4, 6, 2, 10]])


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits[:, -ids.shape[1]:]


def saved(path, folder, name="lora", seed=1, **kw):
    """A trained-looking adapter of `name` saved to `folder` (its tensors moved off their start)."""
    method = METHODS.get(name)
    torch.manual_seed(seed)
    model = method.apply(load_model(ModelConfig(name=path)), method.Config(**kw))
    perturb_trainable(model, 0.1, seed=seed)
    method.save(model, folder)
    return folder


def test_parse_adapters_names_by_folder_or_name_and_refuses_clashes():
    assert parse_adapters(["a=runs/x/final", "runs/y/final", "z/adapter"]) == {
        "a": "runs/x/final", "y": "runs/y/final", "adapter": "z/adapter"}
    with pytest.raises(ConfigError, match="two adapters are named 'a'"):
        parse_adapters(["runs/a/final", "a=elsewhere"])
    with pytest.raises(ConfigError, match="'base' names the base model"):
        parse_adapters(["base=runs/x"])


@pytest.mark.parametrize("name", ["lora", "prompt"])
def test_several_adapters_on_one_base_switch_and_switch_off(name, tiny_model_dir, tmp_path):
    path = tiny_model_dir("llama")
    kw = {"r": 4} if name == "lora" else {"num_virtual_tokens": 3}
    a, b = saved(path, tmp_path / "a", name, 1, **kw), saved(path, tmp_path / "b", name, 2, **kw)
    alone = {n: logits(load_trained(f, base=path)[0]) for n, f in (("a", a), ("b", b))}
    model, _ = load_adapters({"a": str(a), "b": str(b)}, base=path)
    for n in ("b", "a"):
        with active(model, n):
            torch.testing.assert_close(logits(model), alone[n], atol=1e-6, rtol=0)
    with active(model, BASE):
        assert torch.equal(logits(model), logits(load_model(ModelConfig(name=path))))
    with pytest.raises(ConfigError, match="no adapter named 'c'; loaded: a, b"):
        active(model, "c")


def test_adapters_of_different_methods_or_a_bottleneck_do_not_share_a_base(tiny_model_dir, tmp_path):
    path = tiny_model_dir("llama")
    lora_dir, ia3_dir = saved(path, tmp_path / "l", r=4), saved(path, tmp_path / "i", "ia3")
    with pytest.raises(ConfigError, match="must be of one method \\(l is lora, i is ia3\\)"):
        load_adapters({"l": str(lora_dir), "i": str(ia3_dir)}, base=path)
    (tmp_path / "b1").mkdir()
    b1 = saved(path, tmp_path / "b1", "bottleneck")
    with pytest.raises(ConfigError, match="bottleneck folders load one to a base"):
        load_adapters({"x": str(b1), "y": str(b1)}, base=path)


def _delta(adapter_dir, base_path):
    """The change an adapter makes to every weight it adapts: merged - base."""
    base = dict(load_model(ModelConfig(name=base_path)).named_parameters())
    merged = load_trained(adapter_dir, base=base_path)[0].merge_and_unload()
    return {n: p.detach() - base[n].detach() for n, p in merged.named_parameters()}


def test_combine_linear_1_0_is_the_first_and_cat_1_1_is_both_deltas(tiny_model_dir, tmp_path):
    path = tiny_model_dir("llama")
    a, b = saved(path, tmp_path / "a", r=4, seed=1), saved(path, tmp_path / "b", r=4, seed=2)
    named = {"a": str(a), "b": str(b)}
    first = combine(named, [1.0, 0.0], "linear", tmp_path / "first", base=path)
    torch.testing.assert_close(logits(load_trained(first)[0]), logits(load_trained(a, base=path)[0]),
                               atol=1e-5, rtol=0)

    both = combine(named, [1.0, 1.0], "cat", tmp_path / "both", base=path)
    assert json.loads((both / "adapter_config.json").read_text())["r"] == 8
    da, db, dboth = _delta(a, path), _delta(b, path), _delta(both, path)
    moved = [n for n in da if da[n].abs().max() > 0]
    assert moved
    for n in moved:
        torch.testing.assert_close(dboth[n], da[n] + db[n], atol=1e-5, rtol=0)

    svd = combine(named, [1.0, 1.0], "svd", tmp_path / "svd", base=path, rank=8)  # rank 8 holds the sum exactly
    dsvd = _delta(svd, path)
    for n in moved:
        torch.testing.assert_close(dsvd[n], da[n] + db[n], atol=1e-4, rtol=0)
    record = json.loads((svd / "tunewright.json").read_text())
    assert record["method"] == "lora" and record["combination"] == "svd" and record["base_model"] == path


def test_combine_refuses_what_cannot_combine(tiny_model_dir, tmp_path):
    path = tiny_model_dir("llama")
    a, b = saved(path, tmp_path / "a", r=4), saved(path, tmp_path / "b", r=8, seed=2)
    with pytest.raises(ConfigError, match="linear: needs one rank"):
        combine({"a": str(a), "b": str(b)}, [1, 1], "linear", tmp_path / "x", base=path)
    with pytest.raises(ConfigError, match="2 weights for 3 adapters|3 weights for 2 adapters"):
        combine({"a": str(a), "b": str(b)}, [1, 1, 1], "cat", tmp_path / "x", base=path)
    i1, i2 = saved(path, tmp_path / "i1", "ia3"), saved(path, tmp_path / "i2", "ia3", seed=2)
    with pytest.raises(ConfigError, match="only LoRA adapters combine"):
        combine({"i1": str(i1), "i2": str(i2)}, [1, 1], "cat", tmp_path / "y", base=path)


@pytest.mark.parametrize("peft_cfg", [LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), IA3Config(),
                                      PromptTuningConfig(num_virtual_tokens=3)], ids=["lora", "ia3", "prompt"])
def test_an_adapter_written_by_plain_peft_loads_with_a_base_given(peft_cfg, tiny_model_dir, tmp_path):
    """Made with peft alone (no tunewright.json), its recorded base a folder that is gone: `base` says where."""
    path = tiny_model_dir("llama")
    peft_cfg.task_type = "CAUSAL_LM"
    torch.manual_seed(0)
    model = get_peft_model(transformers.AutoModelForCausalLM.from_pretrained(path), peft_cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    want = logits(PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(path), tmp_path))
    ours, _ = load_trained(tmp_path, base=path)
    torch.testing.assert_close(logits(ours), want, atol=1e-6, rtol=0)
