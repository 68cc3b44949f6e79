"""saved_format: what a folder holds, from its files alone (an adapter's PEFT type, or a plain model)."""

from __future__ import annotations

import json

import pytest

from tunewright.models.saved import PLAIN, saved_format


def folder_with(tmp_path, **files):
    for name, content in files.items():
        (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return tmp_path


@pytest.mark.parametrize("peft_type, want", [("LORA", "LORA"), ("IA3", "IA3"), ("PeftType.LORA", "LORA"),
                                             ("prompt_tuning", "PROMPT_TUNING")])
def test_an_adapter_is_its_peft_type(tmp_path, peft_type, want):
    assert saved_format(folder_with(tmp_path, **{"adapter_config.json": {"peft_type": peft_type}})) == want


def test_a_plain_model_folder_and_an_adapter_beside_a_config(tmp_path):
    assert saved_format(folder_with(tmp_path, **{"config.json": {"model_type": "llama"}})) == PLAIN
    # an adapter folder may hold the base's config.json too (e.g. modules_to_save): the adapter decides
    assert saved_format(folder_with(tmp_path, **{"adapter_config.json": {"peft_type": "LORA"}})) == "LORA"


def test_neither_or_an_unreadable_adapter_config(tmp_path):
    assert saved_format(tmp_path) is None
    assert saved_format(tmp_path / "missing") is None
    assert saved_format(folder_with(tmp_path, **{"adapter_config.json": "{not json"})) == ""
    assert saved_format(folder_with(tmp_path, **{"adapter_config.json": ["LORA"]})) == ""
    assert saved_format(folder_with(tmp_path, **{"adapter_config.json": {"r": 8}})) == ""
