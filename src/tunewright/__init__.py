"""tunewright: fine-tune language models from one YAML file."""

from __future__ import annotations

from tunewright.version import __version__

__all__ = ["train", "load_config", "RunConfig", "__version__"]


def __getattr__(name):
    # Lazy: `import tunewright` stays cheap; torch/transformers load only when training.
    if name == "train":
        from tunewright.run import train
        return train
    if name in ("load_config", "RunConfig"):
        from tunewright import config
        return getattr(config, name)
    raise AttributeError(name)
