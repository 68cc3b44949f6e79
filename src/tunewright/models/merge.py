"""Merging: fold a trained adapter into its base and write a plain transformers model folder.

The folder's method does the folding (its `merge`; LoRA: W_merged = W + (alpha / r) * B @ A per
adapted layer, DoRA rescaled by magnitude); a method that cannot (its `CANNOT_MERGE`) is refused
with the reason before anything loads.

The result loads with `AutoModelFor*.from_pretrained` alone, no peft needed: model*.safetensors,
config.json, the tokenizer (with its chat template) and the generation_config saved with the run
(its EOS ids include the end-of-turn token). Its logits match base + adapter to float rounding.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tunewright.errors import ConfigError, TunewrightError
from tunewright.models.trained import import_plugins, load_trained, method_of, resolve_trained

__all__ = ["merge_to_folder", "new_folder", "DTYPES"]

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def merge_to_folder(adapter_or_run_dir, out_dir, base: str | None = None, dtype: str = "float32",
                    echo=None) -> Path:
    """Merge `adapter_or_run_dir` (an adapter, a checkpoint, a run folder -> its final/, or a full
    model, copied as is) into `out_dir`, which must be new or empty, in `dtype` (float32, bfloat16
    or float16). Returns `out_dir`.

    Written to a sibling temp folder first and renamed into place, so a crash leaves no
    half-written model behind under the requested name. The folder is checked, and the temp folder
    made, before the model loads: a wrong `--out` fails in a second, not after the load. Before
    anything is written the merged model's logits are compared with the unmerged ones
    (models/parity.py); `echo` gets the parity line, and a failed check writes nothing.
    """
    from tunewright.models.parity import parity, prompt_logits

    if dtype not in DTYPES:
        raise ConfigError(f"merge --dtype: {dtype!r}; choose float32, bfloat16 or float16 (fp32, bf16, fp16)")
    dtype = DTYPES[dtype]
    out = new_folder(Path(out_dir))
    src = resolve_trained(adapter_or_run_dir)
    import_plugins(src)
    name, method = method_of(src)
    if method.CANNOT_MERGE:
        raise ConfigError(f"{src}: method {name!r} cannot be merged: {method.CANNOT_MERGE}")
    tmp = _staging_folder(out)
    try:
        model, tokenizer = load_trained(src, dtype=dtype, base=base)
        unmerged = prompt_logits(model, tokenizer)
        merged = method.merge(model)  # full and selective: the model as it is
        reference = None
        if dtype != "float32":  # the bar for a low-precision merge is the model's own rounding
            reference = prompt_logits(load_trained(src, dtype="float32", base=base)[0], tokenizer)
        check = parity(unmerged, prompt_logits(merged, tokenizer), dtype, reference)
        if echo is not None:
            echo(check.line)
        if not check.passed:
            raise TunewrightError(f"merge: the merged model does not answer as the adapter did ({check.line}); "
                                  f"nothing was written")
        try:
            merged.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            if getattr(merged, "generation_config", None) is not None and merged.can_generate():
                merged.generation_config.save_pretrained(str(tmp))  # a classifier has none
            if out.exists():
                out.rmdir()  # empty, checked above; os.replace needs the name free on every platform
            os.replace(tmp, out)
        except OSError as err:  # a full or read-only disk: one line, and the temp folder goes
            raise ConfigError(f"{out}: cannot write the merged model ({err.strerror or err})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def new_folder(out: Path) -> Path:
    """`out` as an absolute path, refused unless it is a new or an empty folder other than the
    working folder (replacing that would leave the shell in a deleted folder)."""
    where = out.absolute()
    if where.resolve() in [Path.cwd().resolve(), *Path.cwd().resolve().parents]:
        raise ConfigError(f"merge --out: {out} is the working folder (or holds it); choose a new folder")
    if where.exists() and not where.is_dir():
        raise ConfigError(f"{out}: is a file; merge --out needs a new or empty folder")
    if where.is_dir() and any(where.iterdir()):
        raise ConfigError(f"{out}: the output folder is not empty; choose a new folder (nothing was written)")
    above = next((p for p in where.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ConfigError(f"{out}: {above} is not a folder")
    return where


def _staging_folder(out: Path) -> Path:
    """The sibling temp folder the merged model is written to (its parents made now)."""
    tmp = out.parent / f".{out.name}.merging-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as err:
        raise ConfigError(f"{out}: cannot create the output folder ({err.strerror or err})") from None
    return tmp
