"""`final/`: what a finished run hands over.

    the method's weights          a PEFT adapter, or a plain transformers folder (full, selective)
    tokenizer + chat template     as trained (added tokens included)
    generation_config.json        its EOS ids include the objective's end-of-answer tokens, so
                                  plain `generate` stops where the model learned to (none for a
                                  model that does not generate: a classification head)
    regularizers/                 their state (e.g. L2-SP's starting weights), when the run had any
    tunewright.json               the base model as named (an alias resolves on any machine), its
                                  revision, the method, objective and head, template and system
                                  prompt: what generate/eval/merge need to prompt it as trained

Written into `.tmp-final`, fsynced and renamed into place: a crash leaves the old final/ or none.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tunewright.models.load import base_model
from tunewright.secrets import redact_tree
from tunewright.training.checkpoint import fsync_tree

__all__ = ["save_final"]


def save_final(out: Path, model, method, tokenizer, template: str, end_ids: list[int], record: dict,
               save_more=None) -> None:
    """Write final/ at `out` for `model` trained by `method`; `record` goes into tunewright.json;
    `save_more(folder)` adds what else the run keeps there (the regularizers' state)."""
    final, out = Path(out), Path(out).with_name(".tmp-" + Path(out).name)  # written aside, renamed at the end
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    method.save(model, out)
    tokenizer.save_pretrained(out)
    gen = getattr(base_model(model), "generation_config", None)
    if gen is not None and base_model(model).can_generate():
        gen.eos_token_id = sorted({i for i in end_ids if i is not None})
        gen.pad_token_id = tokenizer.pad_token_id
        gen.save_pretrained(out)
    (out / "tunewright.json").write_text(json.dumps(redact_tree({**record, "raw_text": template == ""}), indent=1))
    if save_more is not None:
        save_more(out)
    fsync_tree(out)
    if final.exists():  # a crash between these two lines leaves .tmp-final complete, final/ gone
        shutil.rmtree(final)
    os.replace(out, final)
