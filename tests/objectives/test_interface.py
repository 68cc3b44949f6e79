"""Every registered objective has the whole interface of objectives/__init__.py, and a row of data
goes through it (encode -> collate -> count -> loss) on a tiny model of the head it asks for."""

from __future__ import annotations

import pytest
import torch

from tunewright.config import ModelConfig, load_config
from tunewright.data.types import Example, Message
from tunewright.models.load import HEADS, load_model, load_tokenizer
from tunewright.objectives import OBJECTIVE_CONFIGS, OBJECTIVES, misfit, setup

TINY = {"causal_lm": "llama", "seq2seq": "t5"}  # a tiny architecture for each head
PROMPT = [Message("user", "Count to three.", train=False)]
# a row in the first format each objective reads (None: the conversation formats)
EXAMPLES = {
    None: Example(messages=[*PROMPT, Message("assistant", "one two three")], source="x.jsonl", line=1),
    "preference": Example(messages=PROMPT, responses=[[Message("assistant", "one two three", train=True)],
                                                      [Message("assistant", "three", train=True)]],
                          source="x.jsonl", line=1),
    "unpaired": Example(messages=PROMPT, responses=[[Message("assistant", "one two three", train=True)]], label=True,
                        source="x.jsonl", line=1),
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


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_a_row_goes_through_encode_collate_count_and_loss(name, tiny_model_dir):
    obj = OBJECTIVES.get(name)
    folder = tiny_model_dir(TINY[obj.HEAD])
    fmt = obj.FORMATS[0] if obj.FORMATS else None
    cfg = load_config(raw={"model": {"name": folder}, "data": {"datasets": [{"path": "x.jsonl", "format": fmt or "alpaca"}],
                                                               "cutoff_len": 64},
                           "objective": {"name": name}})
    tokenizer = load_tokenizer(ModelConfig(name=folder))
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" if obj.TEMPLATED else ""
    encoded = obj.encode(EXAMPLES[fmt], tokenizer, template, cfg.data)
    assert not isinstance(encoded, str), encoded
    assert isinstance(obj.render(encoded, tokenizer), str)
    batch = obj.collate([[encoded], [encoded]], tokenizer.pad_token_id, False)
    assert batch["num_tokens"] > 0 and obj.count(batch) > 0
    torch.manual_seed(0)
    model = load_model(ModelConfig(name=folder), obj.HEAD)
    loss, metrics = obj.loss(model, batch, cfg.objective, setup(obj, model, cfg.objective))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    assert set(metrics) == set(obj.METRICS)
    assert misfit(obj, cfg) is None and all(isinstance(i, int) for i in obj.end_ids(tokenizer, template))
