"""`objective.name: auto` follows the model, keeps causal_lm's keys, and configs saved by earlier
versions (every key written out, seq2seq included) still load."""

from __future__ import annotations

import pytest

from tunewright.config import parse_config
from tunewright.errors import ConfigError
from tunewright.objectives import causal_lm, resolve_objective, seq2seq

RAW = {"data": {"datasets": [{"path": "x.jsonl"}]}}


def _objective(section: dict):
    return parse_config({**RAW, "objective": section}, "run.yaml").objective


def test_auto_follows_the_head_and_carries_its_loss_keys():
    cfg = _objective({"chunk_size": 512, "cross_entropy": "chunked"})  # no name: auto
    module, resolved = resolve_objective(cfg, "causal_lm")
    assert module is causal_lm and resolved == causal_lm.Config(chunk_size=512, cross_entropy="chunked")
    module, resolved = resolve_objective(_objective({}), "seq2seq")
    assert module is seq2seq and resolved == seq2seq.Config()


def test_auto_on_an_encoder_decoder_refuses_a_causal_only_key():
    with pytest.raises(ConfigError, match=r"objective.cross_entropy: 'chunked' has no effect with an encoder-decoder"):
        resolve_objective(_objective({"cross_entropy": "chunked"}), "seq2seq")


@pytest.mark.parametrize("saved", [
    {"name": "auto", "chunk_size": 1024, "cross_entropy": "fused"},  # what config.yaml held before
    {"name": "seq2seq", "chunk_size": 1024, "cross_entropy": "fused"},
    {"name": "causal_lm", "chunk_size": 256, "cross_entropy": "full"} | {"chunk_size": 1024},
])
def test_configs_saved_by_earlier_versions_load(saved):
    assert _objective(saved).name == saved["name"]


def test_seq2seq_refuses_a_causal_key_set_away_from_its_default():
    with pytest.raises(ConfigError, match=r"objective.cross_entropy: 'full' has no effect with objective seq2seq"):
        _objective({"name": "seq2seq", "cross_entropy": "full"})
