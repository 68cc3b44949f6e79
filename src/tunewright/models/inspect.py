"""Trainable and total parameter counts of a method on a model, without loading any weights.

The model is built from its config on PyTorch's meta device (tensors with shapes and no storage),
so a 7B-class model inspects in seconds on a laptop; the method is applied exactly as in training
and the parameters counted. Used by `tunewright validate` and `tunewright inspect`.
"""

from __future__ import annotations

import warnings

from tunewright.models.load import auto_class, natural_head, read_model_config
from tunewright.models.params import count_parameters

__all__ = ["inspect_counts", "meta_model"]


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
