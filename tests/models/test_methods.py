"""The methods registry: shared behaviour of every method (one parametrized test each), then what
is particular to selective and LoRA. Tiny random models from the session fixture."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from peft import PeftModel

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.load import load_model, load_tokenizer, resize_embeddings
from tunewright.models.methods import METHODS, lora, selective
from tunewright.models.params import count_parameters
from tunewright.models.params import perturb_trainable
from tunewright.models.saved import PLAIN, saved_format

IDS = torch.tensor([[1, 5, 9, 7, 3, 11], [1, 8, 4, 6, 2, 10]])

# one config per registered method; the shared tests below run over all of them
CASES = {"full": {}, "selective": {"patterns": [r"self_attn\.q_proj"]}, "lora": {"r": 4}, "ia3": {},
         "prompt": {"num_virtual_tokens": 3}, "prefix": {"num_virtual_tokens": 3}, "bottleneck": {"reduction_factor": 8},
         "cola": {"r": 4}}


def build(path, name, kind=None, new_token_ids=(), **kw):
    method = METHODS.get(name)
    model = load_model(ModelConfig(name=path), kind)
    torch.manual_seed(0)
    return method, method.apply(model, method.Config(**kw), new_token_ids=new_token_ids)


def perturb(model, scale=0.05, seed=1):
    """Move every trainable tensor, as training would (LoRA's B starts at zero: a no-op adapter)."""
    perturb_trainable(model, scale, seed=seed)


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    return tiny_model_dir("llama")


def test_every_registered_method_has_a_case():
    assert sorted(CASES) == METHODS.names()


# ---------------------------------------------------------------- shared behaviour

@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_reaches_exactly_the_trainable_parameters(name, llama):
    method, model = build(llama, name, **CASES[name])
    perturb(model)
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    t, total = count_parameters(model)
    assert (t == total) == (name == "full")


@pytest.mark.parametrize("name", sorted(CASES))
def test_save_then_fresh_apply_then_load_restores_logits(name, llama, tmp_path):
    method, model = build(llama, name, **CASES[name])
    perturb(model)
    want = logits(model)
    method.save(model, tmp_path)
    _, fresh = build(llama, name, **CASES[name])
    assert not torch.allclose(logits(fresh), want)
    method.load(fresh, tmp_path)
    assert torch.equal(logits(fresh), want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_merge_gives_a_plain_transformers_model_with_the_same_logits(name, llama):
    method, model = build(llama, name, **CASES[name])
    if method.CANNOT_MERGE:  # the reason is said, and merge refuses with it
        with pytest.raises(ConfigError, match="cannot be merged"):
            method.merge(model)
        return
    perturb(model)
    want = logits(model)
    merged = method.merge(model)
    assert type(merged) is transformers.LlamaForCausalLM
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_saved_folder_shows_the_methods_format_and_loads_for_inference(name, llama, tmp_path):
    """What models/trained.py relies on: `save` writes `FORMAT`, and `load_for_inference` puts the
    folder on its base (a plain folder is its own base) with the trained logits."""
    method, model = build(llama, name, **CASES[name])
    perturb(model)
    want = logits(model)
    method.save(model, tmp_path)
    assert saved_format(tmp_path) == method.FORMAT
    assert (method.CANNOT_MERGE is None) == (name not in ("prompt", "prefix", "bottleneck"))
    base = load_model(ModelConfig(name=str(tmp_path) if method.FORMAT == PLAIN else llama))
    torch.testing.assert_close(logits(method.load_for_inference(base, tmp_path)), want, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- full

def test_full_save_is_a_plain_folder_loadable_by_transformers(llama, tmp_path):
    method, model = build(llama, "full")
    perturb(model)
    method.save(model, tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(logits(again), logits(model))


def test_full_load_refuses_a_folder_holding_an_adapter(llama, tmp_path):
    _, model = build(llama, "lora", r=4)
    lora.save(model, tmp_path)
    method, fresh = build(llama, "full")
    with pytest.raises(ConfigError, match="holds a LoRA adapter"):
        method.load(fresh, tmp_path)


# ---------------------------------------------------------------- selective

def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_selective_last_k_layers_trains_the_last_blocks_only(llama):
    _, model = build(llama, "selective", last_k_layers=1)
    names = trainable_names(model)
    assert names == {n for n, _ in model.named_parameters() if n.startswith("model.layers.1.")}


def test_selective_last_k_layers_finds_the_decoder_stack_of_t5(tiny_model_dir):
    _, model = build(tiny_model_dir("t5"), "selective", last_k_layers=1)
    names = trainable_names(model)
    assert names and all(n.startswith("decoder.block.1.") for n in names)
    assert selective.find_blocks(model)[0] == "decoder.block"


def test_selective_bias_only_is_bitfit(tiny_model_dir):
    _, model = build(tiny_model_dir("gpt2"), "selective", bias_only=True)
    names = trainable_names(model)
    assert names == {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    assert count_parameters(model)[0] == sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias"))


def test_selective_bias_only_narrows_the_other_selections(tiny_model_dir):
    _, model = build(tiny_model_dir("gpt2"), "selective", last_k_layers=1, bias_only=True)
    names = trainable_names(model)
    assert names and all(n.startswith("transformer.h.1.") and n.endswith(".bias") for n in names)


def test_selective_bias_only_on_a_model_without_biases_is_an_error(llama):
    with pytest.raises(ConfigError, match="method.bias_only: the selection holds no bias"):
        build(llama, "selective", bias_only=True)


def test_selective_pattern_matching_nothing_names_the_pattern_and_some_parameters(llama):
    with pytest.raises(ConfigError) as err:
        build(llama, "selective", patterns=["q_proj", "attn_typo"])
    text = str(err.value)
    assert "'attn_typo' matches no parameter" in text and "model.embed_tokens.weight" in text
    assert "\n" not in text


def test_selective_bad_regex_and_too_many_layers_are_config_errors(llama):
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        build(llama, "selective", patterns=["q_proj("])
    with pytest.raises(ConfigError, match="only 2 blocks"):
        build(llama, "selective", last_k_layers=3)


def test_selective_new_tokens_make_the_embeddings_trainable(llama):
    _, model = build(llama, "selective", patterns=["q_proj"], new_token_ids=[3])
    names = trainable_names(model)
    assert {"model.embed_tokens.weight", "lm_head.weight"} <= names


def test_selective_save_is_a_plain_folder_loadable_by_transformers(llama, tmp_path):
    method, model = build(llama, "selective", last_k_layers=1)
    perturb(model)
    method.save(model, tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(logits(again), logits(model))


# ---------------------------------------------------------------- LoRA

def test_lora_adapter_loads_with_plain_peft(llama, tmp_path):
    _, model = build(llama, "lora", r=4, lora_alpha=8)
    perturb(model)
    want = logits(model)
    lora.save(model, tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    base = transformers.AutoModelForCausalLM.from_pretrained(llama)
    theirs = PeftModel.from_pretrained(base, tmp_path)
    torch.testing.assert_close(logits(theirs), want, atol=1e-6, rtol=0)


def test_lora_options_reach_the_peft_config(llama, tmp_path):
    _, model = build(llama, "lora", r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=True, use_dora=True,
                     modules_to_save=["lm_head"], target_modules=["q_proj", "o_proj"])
    pc = model.peft_config["default"]
    assert (pc.r, pc.lora_alpha, pc.use_rslora, pc.use_dora) == (4, 8, True, True)
    assert set(pc.target_modules) == {"q_proj", "o_proj"} and "lm_head" in pc.modules_to_save
    assert str(pc.task_type) in ("CAUSAL_LM", "TaskType.CAUSAL_LM")
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(8 / 4 ** 0.5)  # rsLoRA: alpha / sqrt(r)
    assert "default" in q.lora_magnitude_vector  # DoRA's magnitude
    assert any(n.endswith("lm_head.modules_to_save.default.weight") and p.requires_grad
               for n, p in model.named_parameters())
    lora.save(model, tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["use_dora"] and saved["use_rslora"] and saved["modules_to_save"] == ["lm_head"]


@pytest.mark.parametrize("rslora, scale", [(False, 8 / 4), (True, 8 / 4 ** 0.5)], ids=["alpha/r", "rslora"])
def test_lora_layer_computes_w_x_plus_scaled_b_a_x(llama, rslora, scale):
    """The adapted layer's output by hand: W x + s * B (A x), s = alpha / r (plain LoRA, the default)
    or alpha / sqrt(r) (rsLoRA)."""
    _, model = build(llama, "lora", r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=rslora)
    perturb(model)  # B starts at zero, which would hide any scale
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, q.base_layer.in_features, generator=torch.Generator().manual_seed(0))
    a, b = q.lora_A["default"].weight, q.lora_B["default"].weight  # [r, in], [out, r]
    want = torch.nn.functional.linear(x, q.base_layer.weight, q.base_layer.bias) + scale * (x @ a.T @ b.T)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(q(x), want, rtol=1e-5, atol=1e-6)


def test_lora_all_linear_adapts_every_block_linear_but_not_the_head(llama):
    _, model = build(llama, "lora", r=2, target_modules="all-linear")
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_lora_bias_all_trains_the_biases(tiny_model_dir):
    _, model = build(tiny_model_dir("qwen2"), "lora", r=2, bias="all")
    names = trainable_names(model)
    assert any(n.endswith("q_proj.base_layer.bias") for n in names)


def test_lora_unknown_target_module_lists_the_linear_layers(llama):
    with pytest.raises(ConfigError) as err:
        build(llama, "lora", target_modules=["q_proj", "qproj"])
    assert "method.target_modules: 'qproj' matches no module" in str(err.value)
    assert "v_proj" in str(err.value)


def test_lora_on_t5_is_a_seq2seq_adapter_with_gradients_only_in_adapters(tiny_model_dir):
    _, model = build(tiny_model_dir("t5"), "lora", r=4, target_modules=["q", "v"])
    assert type(model).__name__ == "PeftModelForSeq2SeqLM"
    perturb(model)
    model.train()
    model(input_ids=IDS, labels=IDS[:, :4].contiguous()).loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == ("lora_" in n), n


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # untied and tied output head
def test_lora_new_tokens_train_through_trainable_token_indices(arch, tiny_model_dir, tmp_path):
    path = tiny_model_dir(arch)
    tok = load_tokenizer(ModelConfig(name=path))
    tok.add_special_tokens({"additional_special_tokens": ["<|tool|>"]})
    new = tok.convert_tokens_to_ids(["<|tool|>"])
    model = load_model(ModelConfig(name=path))
    assert resize_embeddings(model, tok, new) == new
    model = lora.apply(model, lora.Config(r=4), new_token_ids=new)
    deltas = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert all("trainable_tokens_delta" in n for n in deltas)
    assert len(deltas) == (2 if arch == "llama" else 1)  # a tied head follows the input's delta
    assert model.peft_config["default"].trainable_token_indices

    perturb(model)
    ids = torch.tensor([[1, 5, new[0], 7]])
    want = logits(model, ids)
    lora.save(model, tmp_path)
    base = transformers.AutoModelForCausalLM.from_pretrained(path)
    base.resize_token_embeddings(len(tok))
    theirs = PeftModel.from_pretrained(base, tmp_path)
    torch.testing.assert_close(logits(theirs, ids), want, atol=1e-6, rtol=0)
    merged = lora.merge(model)
    emb = merged.get_input_embeddings().weight
    assert not torch.allclose(emb[new[0]], emb[:-1].mean(0))  # the new row trained
    torch.testing.assert_close(logits(merged, ids), want, atol=1e-5, rtol=0)


def test_lora_init_from_continues_an_adapter_as_a_new_run(llama, tmp_path):
    _, model = build(llama, "lora", r=4)
    perturb(model)
    want = logits(model)
    lora.save(model, tmp_path)
    _, again = build(llama, "lora", init_from=str(tmp_path))
    assert again.peft_config["default"].r == 4
    assert any(p.requires_grad for n, p in again.named_parameters() if "lora_A" in n)
    torch.testing.assert_close(logits(again), want, atol=1e-6, rtol=0)


def test_lora_init_from_refuses_another_architecture_or_other_settings(llama, tiny_model_dir, tmp_path):
    _, model = build(llama, "lora", r=4)
    lora.save(model, tmp_path)
    with pytest.raises(ConfigError, match="method.init_from: .* different architecture: .*model_type='llama'"):
        build(tiny_model_dir("qwen2"), "lora", init_from=str(tmp_path))
    with pytest.raises(ConfigError, match="method.r: 8 differs from the adapter"):
        build(llama, "lora", r=8, init_from=str(tmp_path))
    with pytest.raises(ConfigError, match="not a PEFT adapter folder"):
        build(llama, "lora", init_from=str(tmp_path / "nowhere"))


def test_lora_init_from_refuses_another_methods_adapter_naming_its_type(llama, tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3", "base_model_name_or_path": llama}))
    with pytest.raises(ConfigError, match="method.init_from: .* holds an adapter of PEFT type IA3, not LoRA"):
        build(llama, "lora", init_from=str(tmp_path))


def test_lora_resume_into_a_different_rank_is_a_config_error(llama, tmp_path):
    _, model = build(llama, "lora", r=4)
    lora.save(model, tmp_path)
    _, other = build(llama, "lora", r=8)
    with pytest.raises(ConfigError, match="does not fit this model"):
        lora.load(other, tmp_path)


def test_lora_with_gradient_checkpointing_still_trains_the_adapters(llama):
    model = load_model(ModelConfig(name=llama, gradient_checkpointing=True))
    model = lora.apply(model, lora.Config(r=4))
    perturb(model)
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
