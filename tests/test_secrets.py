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
