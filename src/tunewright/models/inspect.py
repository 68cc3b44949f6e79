"""Trainable and total parameter counts of a method on a model, without loading any weights.

The model is built from its config on PyTorch's meta device (tensors with shapes and no storage),
so a 7B-class model inspects in seconds on a laptop; the method is applied exactly as in training
and the parameters counted. Used by `tunewright validate` and `tunewright inspect`.

`inspect_trained` reads what a run or an adapter folder holds (its method, the parameters it saved,
the counts as trained) and, for prompt tuning, which vocabulary tokens each virtual token is nearest.
"""

from __future__ import annotations

import warnings

from tunewright.models.load import auto_class, natural_head, read_model_config
from tunewright.models.params import count_parameters

__all__ = ["inspect_counts", "meta_model", "is_trained_folder", "inspect_trained"]


def meta_model(model_name_or_config: str, *, trust_remote_code: bool = False, revision: str | None = None,
               added_tokens: int = 0):
    """The model a folder, hub id or config.json describes, on the meta device.

    `added_tokens` grows the vocabulary as the tokens a template adds would (their rows are the
    last ones). Returns (model, ids of the added rows).
    """
    import torch

    hf_config = read_model_config(model_name_or_config, trust_remote_code=trust_remote_code, revision=revision)
    new_ids: list[int] = []
    if added_tokens:
        vocab = hf_config.vocab_size
        hf_config.vocab_size = vocab + added_tokens
        new_ids = list(range(vocab, vocab + added_tokens))
    with torch.device("meta"):
        model = auto_class(natural_head(hf_config)).from_config(hf_config, trust_remote_code=trust_remote_code)
    return model, new_ids


def inspect_counts(model_name_or_config: str, method_cfg, *, trust_remote_code: bool = False,
                   revision: str | None = None, added_tokens: int = 0) -> tuple[int, int]:
    """(trainable, total) parameters once `method_cfg` (a method Config) is applied to the model."""
    from tunewright.models.methods import METHODS

    model, new_ids = meta_model(model_name_or_config, trust_remote_code=trust_remote_code, revision=revision,
                                added_tokens=added_tokens)
    with warnings.catch_warnings():
        # method.init_from loads an adapter into meta tensors: only its shapes matter here
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        model = METHODS.get(method_cfg.name).apply(model, method_cfg, new_token_ids=new_ids)
    return count_parameters(model)


# ---------------------------------------------------------------- what a run or an adapter folder holds

def is_trained_folder(path) -> bool:
    """A run folder, its final/, a checkpoint or an adapter: not a plain base model to count a method on."""
    from pathlib import Path

    from tunewright.models.saved import PLAIN, saved_format

    p = Path(path)
    if not p.is_dir():
        return False
    return any((p / name).exists() for name in ("final", "tunewright.json", "trainer_state.json")) \
        or saved_format(p) not in (None, PLAIN)


def _run_config(folder):
    """The config.yaml of the run that wrote `folder` (final/ or checkpoints/step-N), or None."""
    for config in (folder.parent / "config.yaml", folder.parent.parent / "config.yaml"):
        if config.is_file():
            return config
    return None


def _saved_parameters(folder) -> int:
    """Elements in the folder's weight files (read from their headers, nothing loaded)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                total += _numel(f.get_slice(key).get_shape())
    return total


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def inspect_trained(path, nearest: int = 0) -> list[str]:
    """Lines for `tunewright inspect RUN`: the method and what it saved; the counts as trained when
    the run's config.yaml is there; with `nearest`, each virtual token's nearest vocabulary tokens
    (methods with `nearest_tokens`: prompt tuning)."""
    from tunewright.config import load_config
    from tunewright.errors import ConfigError
    from tunewright.models.params import format_counts
    from tunewright.models.trained import import_plugins, load_trained, method_of, resolve_trained

    folder = resolve_trained(path)
    import_plugins(folder)
    name, method = method_of(folder)
    lines = [f"{folder}: method {name}, saved as {method.FORMAT}; {_saved_parameters(folder):,} parameters in its "
             f"weight files"]
    config = _run_config(folder)
    if config is not None:
        cfg = load_config(config)
        lines.append(format_counts(*inspect_counts(cfg.model.name, cfg.method, revision=cfg.model.revision,
                                                   trust_remote_code=cfg.model.trust_remote_code)))
    if nearest:
        finder = getattr(method, "nearest_tokens", None)
        if finder is None:
            raise ConfigError(f"inspect --nearest: method {name!r} learns no vectors in the vocabulary's embedding "
                              f"space (prompt tuning does); nothing to compare with tokens")
        model, tokenizer = load_trained(folder)
        for i, row in enumerate(finder(model, nearest)):
            shown = ", ".join(f"{tokenizer.decode([t])!r} {cos:.3f}" for t, cos in row)
            lines.append(f"virtual token {i}: {shown}")
    return lines
