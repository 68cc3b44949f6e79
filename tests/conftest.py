"""Shared fixtures: tiny random models built once per session, offline everywhere."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """`tiny_model_dir("llama")` -> folder of a tiny random model + tokenizer (built once)."""
    from tunewright.lab.tiny import make_tiny_model

    cache: dict[str, str] = {}

    def build(arch: str = "llama") -> str:
        if arch not in cache:
            cache[arch] = str(make_tiny_model(tmp_path_factory.mktemp(f"tiny_{arch}"), arch))
        return cache[arch]

    return build


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Keep tunewright's caches (tokenization, converted models) inside the test's tmp folder."""
    monkeypatch.setenv("TUNEWRIGHT_CACHE", str(tmp_path / "tw-cache"))
