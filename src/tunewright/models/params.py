"""Parameter counting: how many parameters a method trains, out of how many.

Each parameter counts once: tied weights (an output head sharing the input embedding) are one
`nn.Parameter` reached under two names. Works on the meta device (only shapes are read).
"""

from __future__ import annotations

__all__ = ["count_parameters", "format_counts"]


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
