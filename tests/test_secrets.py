"""The redactor: every credential pattern tunewright knows is replaced by `***`, the rest of the text
is left as it was (a path stays readable), and nested dumps are redacted keys and values alike."""

from __future__ import annotations

import pytest

from tunewright.secrets import redact, redact_tree

HF = "hf_" + "Canary" * 5


@pytest.mark.parametrize("text, want", [
    (f"/data/{HF}/d.jsonl", "/data/hf_***/d.jsonl"),
    ("https://host/d.jsonl?token=Canary123&x=1", "https://host/d.jsonl?token=***&x=1"),
    ("s3://b/k?X-Amz-Signature=abcdef&X-Amz-Credential=AKIA%2Fx", "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***"),
    ("password=hunter2 api_key=k1 API-KEY=k2 secret=s", "password=*** api_key=*** API-KEY=*** secret=***"),
    ("https://user:CanaryPass@host/x", "https://***@host/x"),
    ("git+https://ghp_CanaryCanary@github.com/o/r", "git+https://***@github.com/o/r"),
    ("model https://user:p%40ss@host:8080/m and more", "model https://***@host:8080/m and more"),
    ("https://user:p@ss@host/x?a=b@c", "https://***@host/x?a=b@c"),  # a raw '@' in the password
    ("https:/user:CanaryPass@host/x", "https:/***@host/x"),  # as pathlib prints a URL it was given
    ("secret='Canary x' and token=\"Canary\"", "secret='***' and token=\"***\""),  # quoted values
])
def test_each_credential_pattern_is_redacted(text, want):
    assert redact(text) == want


@pytest.mark.parametrize("text", [
    "/data/alpaca.jsonl", "tatsu-lab/alpaca", "hf_short_name", "https://host/path/x.jsonl", "user@example.com",
    "tokens=512 cutoff", "train.max_steps=50",
])
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == text


def test_redact_tree_covers_keys_and_values():
    tree = {"path": f"/d/{HF}", "candidates": [{"name": "a", "model": "https://u:p@h/m"}], "n": 3,
            "outputs": {f"cand-{HF}": "x?token=abc"}}
    assert redact_tree(tree) == {"path": "/d/hf_***", "candidates": [{"name": "a", "model": "https://***@h/m"}],
                                 "n": 3, "outputs": {"cand-hf_***": "x?token=***"}}


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


def test_redact_tree_reaches_every_string_in_lists_and_dicts():
    tree = {"data": [{"path": "https://h/x?token=abc"}, 3, None], "name": "plain", "nested": {"url": "a?password=b"}}
    assert redact_tree(tree) == {"data": [{"path": "https://h/x?token=***"}, 3, None], "name": "plain",
                                 "nested": {"url": "a?password=***"}}
