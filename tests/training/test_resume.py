"""Resume keys: which changes are refused, and how the refusal names them."""

from pathlib import Path

import pytest

from tunewright.config import load_config
from tunewright.errors import ConfigError
from tunewright.training.resume import check_resume_key, data_digest, resume_key


def _key(*overrides, digest="d"):
    cfg = load_config(raw={"data": {"datasets": [{"path": "a.jsonl"}]}}, overrides=list(overrides))
    return resume_key(cfg, 1, digest)


def test_honoured_changes_are_not_in_the_key():
    base = _key()
    for change in ("train.learning_rate=0.5", "train.max_steps=99", "train.num_epochs=3", "eval.steps=5",
                   "output.save_steps=3", "train.logging_steps=7", "model.gradient_checkpointing=true",
                   "data.cache_dir=/elsewhere"):
        check_resume_key(base, _key(change), Path("ckpt"))


@pytest.mark.parametrize("change,named", [
    ("train.weight_decay=0.1", r"train.weight_decay \(0.0 -> 0.1\)"),
    ("train.micro_batch_size=2", r"train.micro_batch_size \(4 -> 2\)"),
    ("data.cutoff_len=64", r"data.cutoff_len \(512 -> 64\)"),
    ("data.datasets.0.path=b.jsonl", r"data.datasets.0.path \('a.jsonl' -> 'b.jsonl'\)"),
    ("method.r=4", r"method.r \(8 -> 4\)"),
    ("train.optimizer=adamw_8bit", r"train.optimizer \('adamw' -> 'adamw_8bit'\)"),
    ("model.load_in_4bit=true", r"model.load_in_4bit \(False -> True\)"),
])
def test_refused_changes_name_the_key_and_both_values(change, named):
    with pytest.raises(ConfigError, match=rf"ckpt was written with different settings: {named}; resume with"):
        check_resume_key(_key(), _key(change), Path("ckpt"))


def test_a_changed_or_added_regularizer_is_refused():
    l2_sp = "regularizers=[{name: l2_sp, weight: 0.1}]"
    with pytest.raises(ConfigError, match=r"settings: regularizers.0.weight \(0.1 -> 0.2\); resume with"):
        check_resume_key(_key(l2_sp), _key("regularizers=[{name: l2_sp, weight: 0.2}]"), Path("ckpt"))
    with pytest.raises(ConfigError, match=r"settings: regularizers \(\[\] -> '1 entries'\)"):
        check_resume_key(_key(), _key(l2_sp), Path("ckpt"))


def test_changed_rows_are_refused_and_old_keys_compare_what_they_have():
    with pytest.raises(ConfigError, match=r"data \(the training rows' content changed"):
        check_resume_key(_key(digest="a"), _key(digest="b"), Path("ckpt"))
    old = {k: v for k, v in _key(digest="a").items() if k not in ("train", "data_content")}
    check_resume_key(old, _key(digest="b"), Path("ckpt"))  # a checkpoint from before these keys existed


def test_the_digest_follows_tokens_and_labels():
    from tunewright.data.types import Encoded

    rows = [Encoded([1, 2, 3], [-100, 2, 3])]
    assert data_digest(rows) == data_digest([Encoded([1, 2, 3], [-100, 2, 3])])
    assert data_digest(rows) != data_digest([Encoded([1, 2, 3], [1, 2, 3])])
