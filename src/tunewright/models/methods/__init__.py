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
                                merge (for a PLAIN folder `model` was loaded from `path` itself);
                                PEFT methods take `adapter_name=` too, to put several adapters of
                                one type on one base (models/adapters.py)

Optional hooks (a method without them gets the default):
    param_groups(model, cfg, train_cfg) -> list[dict] | None
                                optimizer groups ({"params", "lr", "weight_decay"}) replacing the
                                default decay/no-decay split (LoRA+: B at a multiple of A's lr). The
                                first group must be at train.learning_rate: a resume with a new
                                learning rate scales every group by the ratio to it
                                (training/resume.py), so the groups keep their ratios
    misfit(run_cfg) -> str | None
                                why another section's setting cannot work with the method (prompt
                                and prefix refuse data.packing); checked when the config is read
    nearest_tokens(model, k) -> [[(token id, cosine)]]
                                for a method that learns vectors in the input embedding space
                                (prompt tuning): each one's k nearest vocabulary tokens, shown by
                                `tunewright inspect RUN --nearest k`

models/trained.py finds a folder's method (`method_of`): the run record (final/tunewright.json)
names it; otherwise the first method by name whose FORMAT is the folder's, so a plain folder is
read by `full` and a LoRA adapter by `lora`.

A new method is one file here, one line in `METHODS` below and one test file.
"""

from __future__ import annotations

from tunewright.models.methods import bottleneck, cola, full, ia3, lora, prefix, prompt, selective
from tunewright.registry import Configs, Registry

__all__ = ["METHODS", "METHOD_CONFIGS", "PLANNED_METHODS", "param_groups", "misfit"]

METHODS: Registry = Registry("method")
METHODS.register("full", full)
METHODS.register("selective", selective)
METHODS.register("lora", lora)
METHODS.register("ia3", ia3)
METHODS.register("prompt", prompt)
METHODS.register("prefix", prefix)
METHODS.register("bottleneck", bottleneck)
METHODS.register("cola", cola)

METHOD_CONFIGS = Configs(METHODS)  # name -> Config, live (plug-ins add to it)

# Names users will reach for that a later release implements: rejected with a clear message.
PLANNED_METHODS = {
    "qlora": "use `name: lora` with `model.load_in_4bit: true` (QLoRA: an NF4 base, double quantization)",
    "dora": "use `name: lora` with `use_dora: true`",
    "adapter": "use `name: bottleneck` (Houlsby/Pfeiffer bottleneck adapters)",
    "pissa": "use `name: lora` with `init_lora_weights: pissa`",
    "loraplus": "use `name: lora` with `loraplus_lr_ratio: 16`",
    "longlora": "not supported yet (LongLoRA's shifted sparse attention is not built)",
}


def param_groups(method, model, cfg, train_cfg) -> list[dict] | None:
    """The method's optimizer groups (its optional `param_groups` hook), or None for the default."""
    hook = getattr(method, "param_groups", None)
    return hook(model, cfg, train_cfg) if hook is not None else None


def misfit(method, run_cfg) -> str | None:
    """Why `run_cfg` cannot work with `method` (its optional `misfit` hook), or None."""
    hook = getattr(method, "misfit", None)
    return hook(run_cfg) if hook is not None else None
