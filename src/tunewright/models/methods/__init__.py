"""PEFT methods, keyed by the `method.name` users write in YAML.

Every method is a module with the same surface (no classes to inherit from):

    Config                      pydantic section; its `name` field is the registry key
    apply(model, cfg) -> model  freeze/wrap the model so only the method's parameters train
    save(model, path)           write what the method trains (a PEFT adapter, or a plain
                                transformers folder for full/selective)
    load(model, path)           load weights saved by `save` into a model prepared by `apply`
                                (resume)
    merge(model) -> model       a plain transformers model with the method folded in
    CANNOT_MERGE                None when `merge` can fold the method into the base weights, else
                                why not (one line): `tunewright merge` refuses with it and
                                `tunewright verify` skips its merge check
    FORMAT                      what `save` writes, so a saved folder is known to be this method's:
                                the PEFT type adapter_config.json records ("LORA"), or
                                `models.saved.PLAIN` for a plain transformers model folder
    load_for_inference(model, path) -> model
                                put a saved folder onto a base model for generate, chat, eval and
                                merge (for a PLAIN folder `model` was loaded from `path` itself)

models/trained.py finds a folder's method (`method_of`): the run record (final/tunewright.json)
names it; otherwise the first method by name whose FORMAT is the folder's, so a plain folder is
read by `full` and a LoRA adapter by `lora`.

A new method is one file here, one line in `METHODS` below and one test file.
"""

from __future__ import annotations

from tunewright.models.methods import full, lora, selective
from tunewright.registry import Configs, Registry

__all__ = ["METHODS", "METHOD_CONFIGS", "PLANNED_METHODS"]

METHODS: Registry = Registry("method")
METHODS.register("full", full)
METHODS.register("selective", selective)
METHODS.register("lora", lora)

METHOD_CONFIGS = Configs(METHODS)  # name -> Config, live (plug-ins add to it)

# Names users will reach for that a later release implements: rejected with a clear message.
PLANNED_METHODS = {
    "qlora": "not supported yet (quantized loading comes with the QLoRA issue)",
    "dora": "use `name: lora` with `use_dora: true`",
    "prefix": "not supported yet", "prompt": "not supported yet", "ia3": "not supported yet",
    "adapter": "not supported yet", "bottleneck": "not supported yet", "cola": "not supported yet",
}
