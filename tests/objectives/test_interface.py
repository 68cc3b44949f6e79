"""Every registered objective has the whole interface of objectives/__init__.py, and a row of data
goes through it (encode -> collate -> count -> loss; an RL objective's rollout through `refresh` first)
on a tiny model of the head it asks for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunewright.config import ModelConfig, load_config
from tunewright.data.pipeline import PreparedData
from tunewright.data.types import Example, Message, Segment
from tunewright.models.load import HEADS, load_model, load_tokenizer, resize_embeddings
from tunewright.objectives import (OBJECTIVE_CONFIGS, OBJECTIVES, fit_data, misfit, model_config, prepare_tokenizer,
                                   setup)

TINY = {"causal_lm": "llama", "seq2seq": "t5", "sequence_classification": "llama", "embedding": "bert"}  # a tiny architecture per head
# what an objective cannot run without; the RL objectives a reward: the answers' length in characters
LENGTH = f"{Path(__file__).with_name('answer_length.py')}:length"
SETTINGS = {"distill": lambda folder: {"teacher": folder},
            **{name: lambda folder: {"rewards": [{"function": LENGTH}], "max_new_tokens": 4}
               for name in ("ppo", "grpo", "rloo")}}


def _classifier_teacher(folder) -> dict:
    """lwf's settings: a tiny classifier saved once beside `folder`, its classes the two rows' labels."""
    from tunewright.objectives import classification as cls

    labels, out = ["one two", "one two three"], Path(folder).parent / "tiny-classifier-teacher"
    if not out.is_dir():
        tokenizer = load_tokenizer(ModelConfig(name=folder))
        new = cls.prepare_tokenizer(tokenizer)
        model = load_model(ModelConfig(name=folder), cls.HEAD, cls.model_config(cls.Config(labels=labels), tokenizer))
        resize_embeddings(model, tokenizer, new)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return {"teacher": str(out), "labels": labels, "old_labels": labels}


SETTINGS["lwf"] = _classifier_teacher
PROMPT = [Message("user", "Count to three.", train=False)]
PREFERENCE = Example(messages=PROMPT, responses=[[Message("assistant", "one two three", train=True)],
                                                 [Message("assistant", "three", train=True)]], source="x.jsonl", line=1)
UNPAIRED = Example(messages=PROMPT, responses=[[Message("assistant", "one two three", train=True)]], label=True,
                   source="x.jsonl", line=1)
# two rows in the first format each objective reads (the conversation formats by default)
EXAMPLES = {
    "conversation": (Example(messages=[Message("user", "Count to three."), Message("assistant", "one two three")],
                             source="x.jsonl", line=1),
                     Example(messages=[Message("user", "Count to two."), Message("assistant", "one two")],
                             source="x.jsonl", line=2)),
    "preference": (PREFERENCE, PREFERENCE),
    "unpaired": (UNPAIRED, UNPAIRED),
    "pairs": (Example(segments=[Segment("count to three", False), Segment("one two three", True)], source="x.jsonl",
                      line=1),
              Example(segments=[Segment("count to two", False), Segment("one two", True), Segment("three", True)],
                      source="x.jsonl", line=2)),
}


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_surface(name):
    obj = OBJECTIVES.get(name)
    assert obj.Config().name == name and OBJECTIVE_CONFIGS[name] is obj.Config
    assert obj.HEAD in HEADS and obj.UNIT in ("tokens", "pairs", "rows")
    assert obj.FORMATS is None or all(isinstance(f, str) for f in obj.FORMATS)
    assert isinstance(obj.TEMPLATED, bool) and isinstance(obj.PACKABLE, bool)
    assert all(how in ("sum", "mean") for how in obj.METRICS.values())
    for fn in ("misfit", "encode", "collate", "count", "end_ids", "render", "loss"):
        assert callable(getattr(obj, fn)), fn
    if getattr(obj, "OUTPUTS", ()):  # per-row outputs need the function that turns them into metrics
        assert callable(obj.eval_metrics) and all(isinstance(n, str) for n in obj.OUTPUTS)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_a_row_goes_through_encode_collate_count_and_loss(name, tiny_model_dir):
    obj = OBJECTIVES.get(name)
    folder = tiny_model_dir(TINY[obj.HEAD])
    fmt = obj.FORMATS[0] if obj.FORMATS else "alpaca"
    cfg = load_config(raw={"model": {"name": folder}, "objective": {"name": name, **SETTINGS.get(name, lambda folder: {})(folder)},
                           "data": {"datasets": [{"path": "x.jsonl", "format": fmt}], "cutoff_len": 64}})
    tokenizer = load_tokenizer(ModelConfig(name=folder))
    new_ids = prepare_tokenizer(obj, tokenizer)
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" if obj.TEMPLATED else ""
    example, other = EXAMPLES.get(fmt, EXAMPLES["conversation"])
    encoded, encoded_other = (obj.encode(e, tokenizer, template, cfg.data) for e in (example, other))
    assert not isinstance(encoded, str), encoded
    assert isinstance(obj.render(encoded, tokenizer), str)
    batch = obj.collate([[encoded], [encoded_other]], tokenizer.pad_token_id, False)
    assert batch["num_tokens"] > 0 and obj.count(batch) > 0
    torch.manual_seed(0)
    obj_cfg = fit_data(obj, cfg.objective, PreparedData([encoded, encoded_other], []))
    model = load_model(ModelConfig(name=folder), obj.HEAD, model_config(obj, obj_cfg, tokenizer))
    if new_ids:
        resize_embeddings(model, tokenizer, new_ids)
    state = setup(obj, model, obj_cfg, PreparedData([encoded, encoded_other], [], tokenizer=tokenizer,
                                                    template=template))
    if hasattr(obj, "refresh"):  # an RL objective trains on the rollout it samples from the prompts
        batch = obj.refresh(model, 0, [batch], obj_cfg, state)[0]
        assert obj.count(batch) > 0
    loss, metrics = obj.loss(model, batch, obj_cfg, state)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    assert set(metrics) == set(obj.METRICS) | set(getattr(obj, "OUTPUTS", ()))
    assert misfit(obj, cfg) is None and all(isinstance(i, int) for i in obj.end_ids(tokenizer, template))
