"""QLoRA and 8-bit training on the CPU (bitsandbytes 0.50's CPU kernels): the quantized base is NF4
with double quantization, computes exactly as its dequantized weights do, QLoRA's gradients are
LoRA's on the dequantized model, 8-bit AdamW keeps a fraction of AdamW's state and trains alike,
merging dequantizes first, and resume is bit-exact."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from tunewright.models.load import ModelConfig, dequantize, is_quantized, load_model  # noqa: E402
from tunewright.models.memory import quantized_weight_bytes  # noqa: E402
from tunewright.models.methods import METHOD_CONFIGS, METHODS  # noqa: E402
from tunewright.models.params import perturb_trainable  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

QUANT = {"load_in_4bit": True, "quantization": {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}}


def _ids(n=2, t=12):
    return torch.randint(0, 100, (n, t), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def quantized(tiny_model_dir):
    return load_model(ModelConfig(name=tiny_model_dir("llama"), **QUANT))


def test_linear_layers_are_nf4_double_quantized_at_half_a_byte_per_weight(quantized):
    head = quantized.get_output_embeddings()
    linears = [m for m in quantized.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    assert linears and all(isinstance(m, bnb.nn.Linear4bit) for m in linears)
    assert not isinstance(head, bnb.nn.Linear4bit)  # the output head stays in full precision
    weights = stored = 0
    for m in linears:
        state = m.weight.quant_state
        assert state.quant_type == "nf4" and state.nested  # double quantization: the absmax is quantized too
        assert m.weight.dtype == torch.uint8
        n = state.shape.numel()
        tensors = [m.weight.data, state.absmax, state.code, state.state2.absmax, state.state2.code, state.offset]
        size = sum(t.untyped_storage().nbytes() for t in tensors)
        assert size == quantized_weight_bytes(n, state.shape[0], 4, True)  # the estimator's formula
        per_weight = sum(t.untyped_storage().nbytes() for t in (m.weight.data, state.absmax, state.state2.absmax))
        weights, stored = weights + n, stored + per_weight
    # half a byte per weight, plus scales: one byte per 64-weight block (an fp32 without double
    # quantization), one fp32 per 256 blocks; the fixed codes (1.1 kB a layer) aside
    assert 0.5 + 1 / 64 <= stored / weights <= 0.5 + 1 / 64 + 4 / (64 * 256) + 1e-3
    # prepared for k-bit training: nothing trains yet, the embeddings' output asks for gradients
    assert not any(p.requires_grad for p in quantized.parameters())
    assert quantized.get_input_embeddings()(_ids()).requires_grad


def test_logits_equal_the_dequantized_fp32_model_and_differ_from_the_original(tiny_model_dir):
    folder = tiny_model_dir("llama")
    model = load_model(ModelConfig(name=folder, **QUANT))
    ids = _ids()
    with torch.no_grad():
        q = model(input_ids=ids).logits
        plain = dequantize(model)  # in place: the same modules, their weights dequantized to fp32
        assert not is_quantized(plain) and all(p.dtype == torch.float32 for p in plain.parameters())
        d = plain(input_ids=ids).logits
        original = load_model(ModelConfig(name=folder))(input_ids=ids).logits
    torch.testing.assert_close(q, d, atol=1e-4, rtol=0)
    assert (q - original).abs().max() > 1e-3  # quantization happened


def _lora(model):
    cfg = METHOD_CONFIGS["lora"](name="lora", r=4, lora_dropout=0.0, target_modules="all-linear")
    torch.manual_seed(0)
    model = METHODS.get("lora").apply(model, cfg, new_token_ids=[])
    perturb_trainable(model, 0.05, seed=3)  # B starts at zero: move it so A's gradients are not zero
    return model


def test_qlora_gradients_equal_lora_on_the_dequantized_model(tiny_model_dir):
    folder = tiny_model_dir("llama")
    qlora = _lora(load_model(ModelConfig(name=folder, **QUANT)))
    lora = _lora(dequantize(load_model(ModelConfig(name=folder, **QUANT))))
    ids = _ids()
    for model in (qlora, lora):
        model(input_ids=ids, labels=ids).loss.backward()
    got = {n: p.grad for n, p in qlora.named_parameters() if p.requires_grad}
    want = {n: p.grad for n, p in lora.named_parameters() if p.requires_grad}
    assert got.keys() == want.keys() and len(got) == 2 * 7 * 2  # A and B on 7 linears in 2 blocks
    for n in got:
        torch.testing.assert_close(got[n], want[n], atol=1e-4, rtol=1e-4, msg=n)
    assert all(want[n].abs().sum() > 0 for n in want)


def _state_bytes(opt, big_only: bool) -> int:
    total = 0
    for p, state in opt.state.items():
        if big_only and p.numel() < 4096:
            continue
        total += sum(v.untyped_storage().nbytes() for k, v in state.items() if torch.is_tensor(v) and "qmap" not in k)
    return total


def test_eight_bit_adamw_state_is_under_30_percent_and_trains_like_adamw(tiny_model_dir):
    from tunewright.config import TrainConfig
    from tunewright.training.optim import build_optimizer

    ids = _ids(4, 16)
    results = {}
    for name in ("adamw", "adamw_8bit"):
        torch.manual_seed(0)
        model = load_model(ModelConfig(name=tiny_model_dir("llama")))
        opt = build_optimizer(model, TrainConfig(optimizer=name, learning_rate=3e-3))
        for _ in range(20):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        results[name] = (model(input_ids=ids, labels=ids).loss.item(), _state_bytes(opt, True), type(opt).__name__)
    assert results["adamw_8bit"][2] == "AdamW8bit"
    assert results["adamw_8bit"][1] <= 0.30 * results["adamw"][1]
    assert results["adamw_8bit"][0] == pytest.approx(results["adamw"][0], rel=0.02)


def test_paged_optimizer_without_cuda_is_one_clear_error(tiny_model_dir):
    from tunewright.config import TrainConfig
    from tunewright.errors import TunewrightError
    from tunewright.training.optim import build_optimizer

    model = torch.nn.Linear(4, 4)
    with pytest.raises(TunewrightError, match="CUDA unified memory; this run trains on cpu: use adamw_8bit"):
        build_optimizer(model, TrainConfig(optimizer="paged_adamw_8bit"))


# ---------------------------------------------------------------- end to end: a QLoRA run, resumed and merged

def _cfg(tmp_path, model_dir, **over):
    rows = [{"instruction": f"Repeat the word number {i}.", "input": "", "output": f"number {i} " * (1 + i % 3)}
            for i in range(24)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"model": {"name": model_dir, **QUANT},
           "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca", "cutoff_len": 128},
           "method": {"name": "lora", "r": 4, "lora_dropout": 0.1},
           "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 4, "learning_rate": 1e-2, "seed": 3,
                     "mixed_precision": "fp32", "optimizer": "adamw_8bit"},
           "output": {"dir": str(tmp_path / "runs"), "name": "a", "save_steps": 2}}
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v}
    return cfg


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, tiny_model_dir):
    from tunewright.run import train

    tmp = tmp_path_factory.mktemp("qlora")
    return tmp, train(_cfg(tmp, tiny_model_dir("llama")))


def test_qlora_resume_with_eight_bit_adamw_is_bit_exact(qlora_run, tiny_model_dir):
    from safetensors.torch import load_file

    from tunewright.run import train

    tmp, full = qlora_run
    record = json.loads((full.final_dir / "tunewright.json").read_text())
    assert record["quantized"]["load_in_4bit"] is True
    cut = tmp / "runs" / "b"
    shutil.copytree(full.run_dir, cut)
    for p in ["checkpoints/step-4", "final"]:
        shutil.rmtree(cut / p)
    resumed = train(_cfg(tmp, tiny_model_dir("llama"), output={"name": "b"}, train={"resume": "auto"}))
    a, b = load_file(full.final_dir / "adapter_model.safetensors"), load_file(resumed.final_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_merging_a_qlora_adapter_dequantizes_the_base_and_passes_parity(qlora_run, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from tunewright.models.merge import merge_to_folder

    _, run = qlora_run
    lines = []
    out = merge_to_folder(run.final_dir, tmp_path / "merged", echo=lines.append)
    assert lines and "pass" in lines[0].lower()
    merged = load_file(out / "model.safetensors")
    key = "model.layers.0.self_attn.k_proj.weight"  # not adapted: exactly its dequantized weight
    base = dequantize(load_model(ModelConfig(name=tiny_model_dir("llama"), **QUANT)))
    torch.testing.assert_close(merged[key], base.get_parameter(key), atol=0, rtol=0)
    original = load_file(f"{tiny_model_dir('llama')}/model.safetensors")
    assert not torch.equal(merged[key], original[key])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_estimate_of_a_qlora_model_counts_its_stored_bytes(tiny_model_dir, dtype):
    """models/memory.py on the meta device against the real quantized model with LoRA applied (1%).
    In bfloat16 the unquantized tensors (embeddings, norms) are stored in fp32 after k-bit preparation."""
    from tunewright.models.memory import estimate

    folder = tiny_model_dir("llama")
    cfg = METHOD_CONFIGS["lora"](name="lora", r=4)
    model = METHODS.get("lora").apply(load_model(ModelConfig(name=folder, dtype=dtype, **QUANT)), cfg,
                                      new_token_ids=[])
    tensors = {}
    for p in model.parameters():
        tensors[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
        state = getattr(p, "quant_state", None)
        if state is not None:
            for t in (state.absmax, state.code, state.state2.absmax, state.state2.code, state.offset):
                tensors[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    e = estimate(folder, cfg, seq=8, batch=1, dtype=dtype, quant_bits=4, double_quant=True)
    assert e.weights == pytest.approx(sum(tensors.values()), rel=0.01)
    assert e.weights < 0.7 * estimate(folder, cfg, seq=8, batch=1).weights


def test_eight_bit_base_is_int8_and_lora_trains_on_it(tiny_model_dir):
    folder = tiny_model_dir("llama")
    model = load_model(ModelConfig(name=folder, load_in_8bit=True))
    layer = model.model.layers[0].self_attn.k_proj
    assert isinstance(layer, bnb.nn.Linear8bitLt) and layer.weight.dtype == torch.int8
    ids = _ids()
    with torch.no_grad():
        original = load_model(ModelConfig(name=folder))(input_ids=ids).logits
        eight = model(input_ids=ids).logits
    assert 0 < (eight - original).abs().max() < 0.1 * original.abs().max()  # LLM.int8's rounding, no more
    model = METHODS.get("lora").apply(model, METHOD_CONFIGS["lora"](name="lora", r=4), new_token_ids=[])
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
