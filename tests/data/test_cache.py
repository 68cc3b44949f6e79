"""Tokenization cache: hits only when data, tokenizer and token settings are unchanged; safe storage."""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing as mp

import pytest

from tunewright.config import DataConfig
from tunewright.data import cache
from tunewright.data.cache import cache_root, cached_tokenize
from tunewright.data.templates import NAMED, prepare_tokenizer
from tunewright.data.tokenize import tokenize_examples
from tunewright.data.types import Example, Message


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir("qwen2"))


@pytest.fixture
def tok(loaded):
    t = copy.deepcopy(loaded)
    prepare_tokenizer(t, NAMED["chatml"])
    return t


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"instruction": "a"}\n', encoding="utf-8")
    return path


def cfg(**kw) -> DataConfig:
    return DataConfig(datasets=[{"path": "train.jsonl"}], **kw)


def examples(n=3, reply="five"):
    return [Example("train.jsonl", i + 1, messages=[Message("user", f"question {i}"), Message("assistant", reply)])
            for i in range(n)]


class Builder:
    """A build callable that counts its calls."""

    def __init__(self, tok, rows=None, c=None):
        self.tok, self.rows, self.cfg, self.calls = tok, rows or examples(), c or cfg(), 0

    def __call__(self):
        self.calls += 1
        return tokenize_examples(self.rows, self.tok, NAMED["chatml"], self.cfg)


def run(key, tok, c, build, template=NAMED["chatml"]):
    return cached_tokenize(key, tok, template, c, build)


def test_second_call_hits_and_returns_the_same_rows(tok, data_file, caplog):
    build = Builder(tok)
    key = {"files": [str(data_file)], "format": "alpaca"}
    before = dict(cache.COUNTERS)
    first, stats1 = run(key, tok, cfg(), build)
    with caplog.at_level(logging.INFO, logger="tunewright.data.cache"):
        second, stats2 = run(key, tok, cfg(), build)
    assert build.calls == 1
    assert cache.COUNTERS["misses"] == before["misses"] + 1 and cache.COUNTERS["hits"] == before["hits"] + 1
    assert "tokenization cache hit" in caplog.text
    assert [(e.input_ids, e.labels, e.source, e.line, e.meta) for e in second] == \
           [(e.input_ids, e.labels, e.source, e.line, e.meta) for e in first]
    assert stats2.from_cache and not stats1.from_cache
    assert stats2.to_dict() == stats1.to_dict() and "(from cache)" in stats2.lines()[0]


# one changed value per DataConfig field in TOKEN_SETTINGS: a field missing from the key would let a
# run reuse tokens made under another setting (e.g. train_on_inputs: the same ids, other labels)
SETTING_CHANGES = {"template": "chatml", "system_prompt": "Be brief.", "cutoff_len": 64, "truncation": "drop",
                   "train_on_inputs": True, "train_on_turns": "last", "add_eos_token": False, "max_prompt_len": 16,
                   "min_response_words": 2}


def test_every_token_setting_has_a_change_below():
    assert set(SETTING_CHANGES) == set(cache.TOKEN_SETTINGS)


@pytest.mark.parametrize("change", ["file_bytes", *SETTING_CHANGES, "added_token", "template_text", "examples"])
def test_anything_that_changes_tokens_misses(tok, data_file, change):
    key = {"files": [str(data_file)], "examples": examples()}
    build = Builder(tok)
    run(key, tok, cfg(), build)
    c, template = cfg(), NAMED["chatml"]
    if change == "file_bytes":
        data_file.write_text('{"instruction": "b"}\n', encoding="utf-8")
    elif change in SETTING_CHANGES:
        assert getattr(c, change) != SETTING_CHANGES[change]  # a real change from the default
        c = cfg(**{change: SETTING_CHANGES[change]})
    elif change == "added_token":
        tok.add_special_tokens({"extra_special_tokens": ["<|tool|>"]})
    elif change == "template_text":
        template = NAMED["chatml"] + " "
    elif change == "examples":
        key = {**key, "examples": examples(reply="six")}
    run(key, tok, c, build, template)
    assert build.calls == 2


def test_settings_that_act_after_tokenization_still_hit(tok, data_file):
    key = {"files": [str(data_file)]}
    build = Builder(tok)
    run(key, tok, cfg(), build)
    run(key, tok, cfg(packing=True, on_error="skip"), build)
    run(key, tok, cfg(group_by_length=True), build)
    assert build.calls == 1


def test_entry_is_safetensors_and_json_under_the_configured_folder(tok, tmp_path, monkeypatch):
    from safetensors import safe_open

    monkeypatch.setenv("TUNEWRIGHT_CACHE", str(tmp_path / "env"))
    assert cache_root(cfg()) == tmp_path / "env" / "tokenized"
    monkeypatch.delenv("TUNEWRIGHT_CACHE")
    assert str(cache_root(cfg())).endswith(".cache/tunewright/tokenized")
    c = cfg(cache_dir=str(tmp_path / "mine"))
    rows, _ = run({"examples": examples()}, tok, c, Builder(tok))
    entries = list((tmp_path / "mine").iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == ["meta.json", "tokens.safetensors"]
    with safe_open(str(entries[0] / "tokens.safetensors"), "pt") as f:
        assert str(f.get_tensor("input_ids").dtype) == "torch.int32"
        assert f.get_tensor("offsets").tolist()[-1] == sum(len(e.input_ids) for e in rows)
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["stats"]["kept"] == 3 and meta["key_parts"]["settings"]["cutoff_len"] == 512


def test_damaged_entry_is_rebuilt(tok):
    key, build = {"examples": examples()}, Builder(tok)
    first, _ = run(key, tok, cfg(), build)
    entry = next(p for p in cache_root(cfg()).iterdir())
    (entry / "tokens.safetensors").write_bytes(b"not a safetensors file")
    again, stats = run(key, tok, cfg(), build)
    assert build.calls == 2 and not stats.from_cache
    assert [e.input_ids for e in again] == [e.input_ids for e in first]
    assert run(key, tok, cfg(), build)[1].from_cache  # the rebuilt entry is good


def test_failed_build_leaves_nothing_behind(tok):
    def build():
        raise RuntimeError("tokenizer crashed")

    with pytest.raises(RuntimeError):
        run({"examples": examples()}, tok, cfg(), build)
    root = cache_root(cfg())
    assert not root.exists() or list(root.iterdir()) == []


def _rank(queue, key, tok, build_rows):
    build = Builder(tok, build_rows)
    rows, stats = cached_tokenize(key, tok, NAMED["chatml"], cfg(), build)
    queue.put((build.calls, stats.from_cache, [e.input_ids for e in rows]))


def test_processes_share_entries_and_racing_writers_leave_one(tok, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEWRIGHT_CACHE", str(tmp_path / "shared"))
    ctx = mp.get_context("fork")  # ranks of one node: separate processes, one cache folder
    key, rows = {"examples": examples(8)}, examples(8)
    queue = ctx.Queue()
    racers = [ctx.Process(target=_rank, args=(queue, key, tok, rows)) for _ in range(2)]
    for p in racers:
        p.start()
    results = [queue.get(timeout=60) for _ in racers]
    for p in racers:
        p.join(timeout=60)
    assert results[0][2] == results[1][2]
    root = cache_root(cfg())
    assert len(list(root.iterdir())) == 1  # one entry, no temporary folders left
    late = ctx.Process(target=_rank, args=(queue, key, tok, rows))
    late.start()
    calls, from_cache, ids = queue.get(timeout=60)
    late.join(timeout=60)
    assert (calls, from_cache, ids) == (0, True, results[0][2])  # a later rank only reads


def test_a_change_of_phrasings_misses_and_the_same_phrasings_hit(tok, tmp_path):
    """The pipeline keys the cache by the formatted rows: a phrasing change rewrites them."""
    from tunewright.data.mixture import build_splits

    data = tmp_path / "d.jsonl"
    # 40 rows: the draw is seeded by the source's path, here a new tmp folder each run, and with 6
    # rows both phrasings were missing from `first` once in 32 runs; with 40, once in 2**39
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(40)))

    def tokenize(phrasings, seed=0):
        c = DataConfig(datasets=[{"path": str(data), "phrasings": phrasings}])
        train, _, _ = build_splits(c, seed=seed)
        return run({"examples": train, "role": "train"}, tok, c, Builder(tok, train, c))

    before = dict(cache.COUNTERS)
    first, _ = tokenize(["A: {instruction}", "B: {instruction}"])
    tokenize(["A: {instruction}", "B: {instruction}"])  # the same phrasings and seed: a hit
    assert (cache.COUNTERS["misses"], cache.COUNTERS["hits"]) == (before["misses"] + 1, before["hits"] + 1)
    for changed in (["A: {instruction}", "C: {instruction}"], ["B: {instruction}", "A: {instruction}"]):
        tokenize(changed)
    tokenize(["A: {instruction}", "B: {instruction}"], seed=1)  # another seed draws other phrasings
    assert cache.COUNTERS["misses"] == before["misses"] + 4
    assert {e.meta["phrasing"] for e in first} == {1, 2}
