"""Trained folders load for generation: a plain model or a run folder (its final/), an adapter on
its recorded base or on a base given instead, and clear errors for what a folder lacks. A folder's
method is found from its run record or its format, and loads it."""

from __future__ import annotations

import json
import shutil
import types

import pytest
import torch

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.load import load_model, load_tokenizer
from tunewright.models.methods import METHODS, full, lora
from tunewright.models.trained import load_trained, method_of

IDS = torch.tensor([[1, 5, 9, 7, 3]])


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    return tiny_model_dir("llama")


def test_load_trained_plain_folder_and_run_folder(llama, tmp_path):
    model = load_model(ModelConfig(name=llama))
    final = tmp_path / "run" / "final"
    full.save(model, final)
    load_tokenizer(ModelConfig(name=llama)).save_pretrained(final)
    got, tok = load_trained(tmp_path / "run")
    assert not got.training and len(tok) == 565
    assert torch.equal(logits(got), logits(model))


def test_load_trained_adapter_uses_its_base_or_an_override(llama, tmp_path):
    model = lora.apply(load_model(ModelConfig(name=llama)), lora.Config(r=4))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    want = logits(model)
    lora.save(model, tmp_path / "ad")
    (tmp_path / "ad" / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 9], "max_length": 77}))
    got, tok = load_trained(tmp_path / "ad")
    torch.testing.assert_close(logits(got), want, atol=1e-6, rtol=0)
    assert got.get_base_model().generation_config.eos_token_id == [2, 9]
    assert tok.pad_token == "</s>"  # from the base: the adapter folder holds no tokenizer

    shutil.copytree(llama, tmp_path / "moved")
    adapter_cfg = tmp_path / "ad" / "adapter_config.json"
    cfg = json.loads(adapter_cfg.read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    adapter_cfg.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="is not a local folder"):
        load_trained(tmp_path / "ad")
    got, _ = load_trained(tmp_path / "ad", base=str(tmp_path / "moved"))
    torch.testing.assert_close(logits(got), want, atol=1e-6, rtol=0)


def test_load_trained_names_what_a_folder_lacks(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        load_trained(tmp_path / "missing")
    with pytest.raises(ConfigError, match="neither a PEFT adapter"):
        load_trained(tmp_path)


# ---------------------------------------------------------------- which method reads a folder

def write(folder, **files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content))
    return folder


def test_method_of_a_folder_from_its_run_record_its_adapter_config_or_a_plain_model(tmp_path):
    adapter = {"peft_type": "LORA", "base_model_name_or_path": "somewhere"}
    recorded = write(tmp_path / "run", **{"config.json": {}, "tunewright.json": {"method": "selective"}})
    assert method_of(recorded) == ("selective", METHODS.get("selective"))  # not full, though both are plain folders
    assert method_of(write(tmp_path / "adapter", **{"adapter_config.json": adapter})) == ("lora", lora)
    assert method_of(write(tmp_path / "plain", **{"config.json": {}})) == ("full", full)
    # a record without a method (or unreadable) leaves the format to decide
    assert method_of(write(tmp_path / "old", **{"config.json": {}, "tunewright.json": {"base_model": "x"}}))[0] == "full"


def test_method_of_an_adapter_no_method_reads_names_its_peft_type(tmp_path):
    folder = write(tmp_path / "loha", **{"adapter_config.json": {"peft_type": "LOHA"}})
    with pytest.raises(ConfigError) as err:
        method_of(folder)
    assert str(err.value) == (f"{folder}: holds an adapter of PEFT type LOHA, which no registered method reads "
                              f"(they read: BOTTLENECK, COLA, IA3, LORA, PREFIX_TUNING, PROMPT_TUNING, transformers)")
    with pytest.raises(ConfigError, match="LOHA, which no registered method reads"):
        load_trained(folder)  # before any model loads


def test_method_of_refuses_a_record_naming_an_unknown_method_or_another_format(tmp_path):
    folder = write(tmp_path / "a", **{"config.json": {}, "tunewright.json": {"method": "loha"}})
    with pytest.raises(ConfigError, match="names method 'loha', which is not registered; known: bottleneck, cola, full, ia3"):
        method_of(folder)
    folder = write(tmp_path / "b", **{"adapter_config.json": {"peft_type": "LORA"}, "tunewright.json": {"method": "full"}})
    with pytest.raises(ConfigError, match="names method 'full', which saves transformers, but the folder holds LORA"):
        method_of(folder)


def stub_method(calls):
    """A method with a PEFT type of its own whose `load_for_inference` records its calls."""
    stub = types.ModuleType("stub_method")
    stub.FORMAT, stub.CANNOT_MERGE = "STUB_TUNING", "a test stub"

    def load_for_inference(model, path):
        calls.append((type(model).__name__, path))
        return model

    stub.load_for_inference = load_for_inference
    return stub


def test_load_trained_loads_the_base_then_calls_the_folders_method(llama, tmp_path):
    calls = []
    folder = write(tmp_path / "ad", **{"adapter_config.json": {"peft_type": "STUB_TUNING", "base_model_name_or_path": llama}})
    METHODS.register("stub", stub_method(calls))
    try:
        assert method_of(folder)[0] == "stub"
        model, _ = load_trained(folder)
    finally:
        METHODS.unregister("stub")
    assert calls == [("LlamaForCausalLM", folder)]
    torch.testing.assert_close(logits(model), logits(load_model(ModelConfig(name=llama))))
