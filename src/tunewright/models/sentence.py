"""Export an embedding run (objective contrastive) as a sentence-transformers folder:
`tunewright export-embedder RUN --out DIR`, then `SentenceTransformer(DIR).encode(texts)` gives the
vectors the run's objective computes (objectives/contrastive.py: `embed`).

The folder is the trained weights (an adapter folded in by its method, as `tunewright merge` does)
saved as a plain transformers model with its tokenizer, plus the three files sentence-transformers
reads to rebuild the pipeline: modules.json (Transformer -> Pooling -> Normalize when the run
normalised), 1_Pooling/config.json (the run's pooling: mean, cls or last token) and
sentence_bert_config.json (max_seq_length = the run's data.cutoff_len, so texts are cut where
training cut them).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tunewright.errors import ConfigError

__all__ = ["export_sentence_transformer", "sentence_files", "ST_POOLING"]

# objective.pooling -> the key of sentence-transformers' Pooling config that switches it on
ST_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "last": "pooling_mode_lasttoken"}
_ALL_MODES = ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
              "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def sentence_files(out: Path, width: int, pooling: str, normalize: bool, max_seq_length: int) -> None:
    """Write the sentence-transformers module files for a model folder `out` (weights already there)."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    (out / "1_Pooling").mkdir(exist_ok=True)
    config = {"word_embedding_dimension": width, **{mode: mode == ST_POOLING[pooling] for mode in _ALL_MODES},
              "include_prompt": True}
    (out / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2), encoding="utf-8")


def _run_settings(folder: Path) -> tuple[str, bool, int]:
    """(pooling, normalize, cutoff_len) from the config.yaml of the run that wrote `folder`."""
    import yaml

    from tunewright.models.inspect import _run_config

    config = _run_config(folder)
    raw = yaml.safe_load(config.read_text(encoding="utf-8")) if config is not None else None
    objective = (raw or {}).get("objective") or {}
    if objective.get("name") != "contrastive":
        raise ConfigError(f"{folder}: not the output of a contrastive run (its config.yaml says objective "
                          f"{objective.get('name')!r}); export-embedder needs the pooling that run used")
    return objective.get("pooling", "mean"), bool(objective.get("normalize", True)), int(raw["data"]["cutoff_len"])


def export_sentence_transformer(path, out, base: str | None = None) -> Path:
    """Write the trained embedding model of `path` (a contrastive run, its final/ or a checkpoint) to
    `out` (new or empty) as a sentence-transformers folder. Returns `out`."""
    from tunewright.models.load import head_of
    from tunewright.models.merge import _staging_folder, new_folder
    from tunewright.models.trained import import_plugins, load_trained, method_of, resolve_trained

    out = new_folder(Path(out))
    src = resolve_trained(path)
    import_plugins(src)
    pooling, normalize, cutoff = _run_settings(src)
    name, method = method_of(src)
    if method.CANNOT_MERGE:
        raise ConfigError(f"{src}: method {name!r} cannot be merged: {method.CANNOT_MERGE}")
    model, tokenizer = load_trained(src, base=base)
    if head_of(model) != "embedding":
        raise ConfigError(f"{src}: holds a {head_of(model)} model, not an embedding model")
    merged = method.merge(model)
    tmp = _staging_folder(out)
    try:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        sentence_files(tmp, merged.config.hidden_size, pooling, normalize, cutoff)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as err:
        raise ConfigError(f"{out}: cannot write the embedding model ({err.strerror or err})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
