"""Credentials never reach what tunewright writes: hub tokens and `token=`/`password=`/`api_key=`/
`secret=` values inside names, paths and URLs become `***`; everything around them is kept."""

import pytest

from tunewright.secrets import redact, redact_tree


@pytest.mark.parametrize("text, want", [
    ("https://host/data.jsonl?token=abc123&split=train", "https://host/data.jsonl?token=***&split=train"),
    ("s3://bucket/x?password=hunter2", "s3://bucket/x?password=***"),
    ("PASSWD=letmein data.csv", "PASSWD=*** data.csv"),
    ("runs/api_key=sk-live-42/final", "runs/api_key=***/final"),
    ("api-key=k9 and secret=s3cr3t", "api-key=*** and secret=***"),
    ("model hf_abcdefghijklmnopqrstuvwxyz0123 loaded", "model hf_*** loaded"),
], ids=["token", "password", "passwd", "api_key", "secret", "hf"])
def test_credentials_are_replaced_and_the_rest_kept(text, want):
    assert redact(text) == want


def test_text_without_credentials_is_unchanged():
    text = "runs/tokenizer_test/final token_count=12 tokens, password_hint, hf_short"  # no `token=`, no hf_ token
    assert redact(text) == text


def test_redact_tree_reaches_every_string():
    tree = {"data": [{"path": "https://h/x?token=abc"}, 3, None], "name": "plain", "nested": {"url": "a?password=b"}}
    assert redact_tree(tree) == {"data": [{"path": "https://h/x?token=***"}, 3, None], "name": "plain",
                                 "nested": {"url": "a?password=***"}}
