"""What a saved folder holds, read from its files alone (no weights loaded).

    saved_format(folder)   the PEFT type adapter_config.json records ("LORA", "IA3", "PROMPT_TUNING")
                           for an adapter; the `format` of tunewright_adapter.json for an adapter in a
                           format of our own ("BOTTLENECK"); PLAIN for a plain transformers model
                           folder; None otherwise

Each method names the format its `save` writes (`FORMAT`, see models/methods/__init__.py);
models/trained.py matches the two to find which method reads a folder. This module imports
nothing of tunewright's, so methods and the loader can both use it without an import cycle.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["PLAIN", "OWN_ADAPTER", "saved_format"]

# a whole model (config.json + model*.safetensors), loadable with `AutoModel*.from_pretrained` alone
PLAIN = "transformers"
# an adapter peft has no type for (models/methods/bottleneck.py): {"format": ..., its settings}
OWN_ADAPTER = "tunewright_adapter.json"


def saved_format(folder) -> str | None:
    """The format of `folder`: an adapter's PEFT type (upper case, as peft writes it), PLAIN, or
    None when it holds neither. An adapter_config.json without a readable `peft_type` gives "" (an
    adapter of no known type: callers name the file)."""
    folder = Path(folder)
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        try:
            peft_type = json.loads(adapter.read_text(encoding="utf-8")).get("peft_type")
        except (OSError, ValueError, AttributeError):
            return ""
        # peft writes the enum's value ("LORA"); an older or hand-written file may say "PeftType.LORA"
        return str(peft_type or "").removeprefix("PeftType.").upper()
    own = folder / OWN_ADAPTER
    if own.is_file():
        try:
            return str(json.loads(own.read_text(encoding="utf-8")).get("format") or "").upper()
        except (OSError, ValueError, AttributeError):
            return ""
    if (folder / "config.json").is_file():
        return PLAIN
    return None
