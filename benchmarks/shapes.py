"""Model shapes: random-initialised from configs (no downloads), or the real default model.

Speed and memory depend on the shapes, not on the values, so Llama-3.1-8B-like means the 8B's
config (hidden 4096, 32 layers, GQA 32/8, vocab 128256) with random weights. The weights are written
once per shape into the work folder so that every system loads the same ones (step-1 parity).
"""

from __future__ import annotations

import json
from pathlib import Path

# name -> (transformers config class, kwargs); "real" shapes are resolved by tunewright's aliases
SHAPES = {
    "llama-8b": ("LlamaConfig", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                     max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                                     tie_word_embeddings=False)),
    "llama-1b": ("LlamaConfig", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                     max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                                     tie_word_embeddings=True)),
    "qwen-0.5b": ("Qwen2Config", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                      num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                      max_position_embeddings=131072, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                      tie_word_embeddings=True)),
    "tiny": ("LlamaConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=2000, max_position_embeddings=4096,
                                 tie_word_embeddings=False)),
}
REAL = {"smollm2-135m": "smollm2-135m-instruct"}  # shape name -> tunewright model alias


def _tokenizer(vocab: int):
    """A byte-level BPE tokenizer trained on the lab's world text (ids stay below `vocab`)."""
    from tunewright.lab.tiny import train_tokenizer
    from benchmarks.workloads import corpus

    return train_tokenizer(corpus(), vocab_size=min(vocab, 8000), arch="llama")


def prepare_model(shape: str, root: Path, dtype: str) -> str:
    """The model folder (or alias) for `shape`, writing random weights once if needed."""
    if shape in REAL:
        return REAL[shape]
    out = root / "models" / f"{shape}-{dtype}"
    if (out / "done.json").is_file():
        return str(out)
    import torch
    import transformers

    cls_name, kwargs = SHAPES[shape]
    tok = _tokenizer(kwargs["vocab_size"])
    config = getattr(transformers, cls_name)(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **kwargs)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # initialising 8B on the GPU takes seconds
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # this child goes on to benchmark: give the GPU back before the memory cap and peak count start
    del model
    import gc
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    (out / "done.json").write_text(json.dumps({"shape": shape, "dtype": dtype}))
    return str(out)
