"""PEFT methods, keyed by the `method.name` users write in YAML.

Every method is a module with the same surface (no classes to inherit from):

    Config                      pydantic section; its `name` field is the registry key
    apply(model, cfg) -> model  freeze/wrap the model so only the method's parameters train
    save(model, path)           write what the method trains (a PEFT adapter, or a plain
                                transformers folder for full/selective)
    load(model, path)           load weights saved by `save` into a model prepared by `apply`
    merge(model) -> model       a plain transformers model with the method folded in

A new method is one file here, one line in `METHODS` below and one test file.
"""

from __future__ import annotations

from tunewright.models.methods import full, lora, selective
from tunewright.registry import Registry

__all__ = ["METHODS", "METHOD_CONFIGS", "PLANNED_METHODS"]

METHODS: Registry = Registry("method")
METHODS.register("full", full)
METHODS.register("selective", selective)
METHODS.register("lora", lora)

METHOD_CONFIGS = {name: METHODS.get(name).Config for name in METHODS.names()}

# Names users will reach for that a later release implements: rejected with a clear message.
PLANNED_METHODS = {
    "qlora": "not supported yet (quantized loading comes with the QLoRA issue)",
    "dora": "use `name: lora` with `use_dora: true`",
    "prefix": "not supported yet", "prompt": "not supported yet", "ia3": "not supported yet",
    "adapter": "not supported yet", "bottleneck": "not supported yet", "cola": "not supported yet",
}
