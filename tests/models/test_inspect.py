"""inspect_counts on the meta device (a 7B config in seconds, exact counts) and parameter counting."""

from __future__ import annotations

import time

import pytest
import transformers

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.inspect import inspect_counts
from tunewright.models.load import load_model
from tunewright.models.methods import METHODS, full, lora, selective
from tunewright.models.params import count_parameters, format_counts

LLAMA2_7B_TOTAL = 6_738_415_616


@pytest.fixture(scope="module")
def llama2_7b(tmp_path_factory):
    """Llama-2-7B's config.json (dims only: nothing is downloaded or allocated)."""
    folder = tmp_path_factory.mktemp("llama2-7b")
    transformers.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                             num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
                             tie_word_embeddings=False).save_pretrained(folder)
    return str(folder)


def test_llama2_7b_lora_qv_r8_counts_in_seconds(llama2_7b):
    start = time.perf_counter()
    got = inspect_counts(llama2_7b, lora.Config(r=8, target_modules=["q_proj", "v_proj"]))
    assert got == (4_194_304, 6_742_609_920)
    assert time.perf_counter() - start < 20
    assert format_counts(*got) == "trainable 4,194,304 of 6,742,609,920 (0.06%)"


def test_llama2_7b_full_and_selective_counts(llama2_7b):
    assert inspect_counts(llama2_7b, full.Config()) == (LLAMA2_7B_TOTAL, LLAMA2_7B_TOTAL)
    per_block = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096  # attention, MLP, two RMSNorms
    assert inspect_counts(llama2_7b, selective.Config(last_k_layers=2)) == (2 * per_block, LLAMA2_7B_TOTAL)
    # a config.json path works as well as its folder
    assert inspect_counts(llama2_7b + "/config.json", full.Config())[1] == LLAMA2_7B_TOTAL


def test_added_tokens_grow_the_vocabulary_and_train_their_rows(llama2_7b):
    trainable, total = inspect_counts(llama2_7b, lora.Config(r=8), added_tokens=2)
    rows = 2 * 4096 * 2  # two new rows in the input embedding and in the untied head
    assert trainable == 4_194_304 + rows  # the trainable-token deltas
    assert total == 6_742_609_920 + rows + rows


@pytest.mark.parametrize("name, kw", [("full", {}), ("selective", {"last_k_layers": 1}),
                                      ("lora", {"r": 4, "target_modules": "all-linear"})])
def test_meta_counts_equal_counts_of_the_real_model(name, kw, tiny_model_dir):
    method = METHODS.get(name)
    real = method.apply(load_model(ModelConfig(name=tiny_model_dir("qwen2"))), method.Config(**kw))
    assert inspect_counts(tiny_model_dir("qwen2"), method.Config(**kw)) == count_parameters(real)


def test_inspect_refuses_remote_code(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "custom_x", "auto_map": {"AutoConfig": "c.C"}}')
    with pytest.raises(ConfigError, match="model.trust_remote_code: true"):
        inspect_counts(str(tmp_path), full.Config())


def test_tied_weights_count_once(tiny_model_dir):
    model = load_model(ModelConfig(name=tiny_model_dir("qwen2")))  # lm_head tied to embed_tokens
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is emb
    every_name = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    trainable, total = count_parameters(model)
    assert total == trainable == every_name - emb.numel()
    emb.requires_grad_(False)
    assert count_parameters(model) == (total - emb.numel(), total)


def test_format_counts():
    assert format_counts(294_912, 124_734_720) == "trainable 294,912 of 124,734,720 (0.24%)"
    assert format_counts(5, 10_000_000) == "trainable 5 of 10,000,000 (<0.01%)"
    assert format_counts(0, 10) == "trainable 0 of 10 (0.00%)"
    assert format_counts(0, 0) == "trainable 0 of 0 (0.00%)"


# every registered method, with the options that touch shapes or need real weights at init (text
# init reads the tokenizer, PiSSA decomposes W): the meta-device count equals the count once applied
EVERY_METHOD = [("full", {}), ("selective", {"last_k_layers": 1}), ("lora", {"r": 4, "init_lora_weights": "pissa"}),
                ("ia3", {}), ("prompt", {"prompt_tuning_init": "text", "prompt_tuning_init_text": "Classify the tweet."}),
                ("prefix", {"num_virtual_tokens": 5, "prefix_projection": True}), ("bottleneck", {"layers": 1}),
                ("cola", {"r": None})]


def test_every_method_is_counted_on_the_meta_device_as_once_applied(tiny_model_dir):
    assert sorted(name for name, _ in EVERY_METHOD) == METHODS.names()
    path = tiny_model_dir("llama")
    for name, kw in EVERY_METHOD:
        method = METHODS.get(name)
        cfg = method.Config(**kw)
        assert inspect_counts(path, cfg) == count_parameters(method.apply(load_model(ModelConfig(name=path)), cfg)), name
