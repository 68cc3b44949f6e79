"""Merging: fold a trained adapter into its base and write a plain transformers model folder.

    W_merged = W + (alpha / r) * B @ A            (per adapted layer; DoRA rescales by magnitude)

The result loads with `AutoModelFor*.from_pretrained` alone, no peft needed: model*.safetensors,
config.json, the tokenizer (with its chat template) and the generation_config saved with the run
(its EOS ids include the end-of-turn token). Its logits match base + adapter to float rounding.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tunewright.errors import ConfigError
from tunewright.models.load import load_trained, resolve_trained

__all__ = ["merge_to_folder"]


def merge_to_folder(adapter_or_run_dir, out_dir, base: str | None = None, dtype: str = "float32") -> Path:
    """Merge `adapter_or_run_dir` (an adapter, a checkpoint, a run folder -> its final/, or a full
    model, copied as is) into `out_dir`, which must be new or empty. Returns `out_dir`.

    Written to a sibling temp folder first and renamed into place, so a crash leaves no
    half-written model behind under the requested name.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: the output folder is not empty; choose a new folder (nothing was written)")
    src = resolve_trained(adapter_or_run_dir)
    model, tokenizer = load_trained(src, dtype=dtype, base=base)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.merging-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        merged.generation_config.save_pretrained(str(tmp))
        if out.exists():
            out.rmdir()  # empty, checked above; os.replace needs the name free on every platform
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
