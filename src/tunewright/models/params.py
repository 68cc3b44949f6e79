"""Parameter counting: how many parameters a method trains, out of how many.

Each parameter counts once: tied weights (an output head sharing the input embedding) are one
`nn.Parameter` reached under two names. Works on the meta device (only shapes are read).
"""

from __future__ import annotations

__all__ = ["count_parameters", "format_counts", "perturb_trainable"]


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) element counts over the model's unique parameters."""
    trainable = total = 0
    seen: set[int] = set()
    for p in model.parameters():  # already unique per module tree; `seen` also covers odd aliasing
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def format_counts(trainable: int, total: int) -> str:
    """`trainable 294,912 of 124,734,720 (0.24%)`; a share too small for two decimals shows `<0.01%`."""
    share = 100.0 * trainable / total if total else 0.0
    shown = "<0.01" if 0 < share < 0.01 else f"{share:.2f}"
    return f"trainable {trainable:,} of {total:,} ({shown}%)"


def perturb_trainable(model, scale: float, seed: int) -> None:
    """Move every trainable tensor by `scale` x seeded standard normal noise, as training would: a
    fresh adapter may be a no-op (LoRA's B starts at zero), and a check of merging, saving or
    switching adapters needs one that changes the outputs, whatever the method names its tensors."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) * scale)
