"""Plug-ins: your own methods, objectives, regularizers and data formats, without editing tunewright.

A config names them at its top level, and they are imported before the rest of it is read:

    plugins: [my_package.objectives, ./my_regularizer.py]

An entry is a module on the import path, or a `.py` file (relative to the config file's folder).
Importing it runs it; it registers its members the way tunewright's own are registered:

    from tunewright.objectives import OBJECTIVES
    OBJECTIVES.register("my_loss", sys.modules[__name__])     # a module with the objective interface

and from then on `objective.name: my_loss` validates, trains and is documented like a built-in
(the registries' unions are rebuilt). The run folder records the plug-ins (config.yaml's `plugins`
and final/tunewright.json), and generate, eval, merge and verify import them again before loading
what the run trained, or stop naming the module they cannot find.

Trust: importing a module runs its code with your permissions, exactly as `trust_remote_code` does
for a model's code: name only code you trust, and read a shared recipe's `plugins` before running
it. Python entry points are not scanned on purpose: a plug-in runs only when a config names it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from tunewright.errors import ConfigError

__all__ = ["load_plugins", "AFTER_LOAD"]

# Called after every load_plugins: the schema adds its union rebuild here when it is imported (the
# schema imports the registries, and loading what a run trained imports plug-ins: importing the
# schema from here would close a cycle through every objective that loads a trained model).
AFTER_LOAD: list = []


def _import_file(path: Path):
    """Import a .py file once per process, under a name derived from its absolute path."""
    name = f"tunewright_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # a failed import must not look imported next time
        raise
    return module


def load_plugins(entries: list, base: Path | None, field: str = "plugins") -> list[str]:
    """Import each entry of `entries` (module names, or .py paths relative to `base`), then rebuild
    the config unions so their members validate. Returns the entries as recorded in a run folder:
    module names as given, files as absolute paths (the run folder's config.yaml must find them)."""
    if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
        raise ConfigError(f"{field}: a list of module names or .py files (got {entries!r})")
    recorded = []
    for i, entry in enumerate(entries):
        try:
            if entry.endswith(".py"):
                path = (Path(base or ".") / entry).resolve()
                if not path.is_file():
                    raise ConfigError(f"{field}.{i}: {entry}: no such plug-in file")
                _import_file(path)
                recorded.append(str(path))
            else:
                importlib.import_module(entry)
                recorded.append(entry)
        except ConfigError:
            raise
        except ImportError as err:
            raise ConfigError(f"{field}.{i}: cannot import plug-in {entry!r}: {err}; install it or put it on "
                              f"PYTHONPATH") from None
        except Exception as err:  # noqa: BLE001 - a plug-in's own bug: name it, one line
            raise ConfigError(f"{field}.{i}: plug-in {entry!r} failed while importing: "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    for hook in AFTER_LOAD:  # the schema's refresh_unions, once the schema exists
        hook()
    return recorded
