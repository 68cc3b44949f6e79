"""model.layers: the first k blocks of a model, loaded with their own weights (the later ones are
never read), giving the logits of the full model run through its first k blocks only; an adapter
trained on the cut model goes back on the same cut base."""

from __future__ import annotations

import json

import pytest
import torch

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.load import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_blocks(tiny_model_dir) -> str:
    return tiny_model_dir("llama")


def test_the_first_k_blocks_give_the_full_model_cut_by_hand(two_blocks):
    full = load_model(ModelConfig(name=two_blocks)).eval()
    cut = load_model(ModelConfig(name=two_blocks, layers=1)).eval()
    assert len(full.model.layers) == 2 and len(cut.model.layers) == 1 and cut.config.num_hidden_layers == 1
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        want = full.model.embed_tokens(ids)
        positions = full.model.rotary_emb(want, torch.arange(5).unsqueeze(0))
        mask = torch.full((5, 5), float("-inf")).triu(1)[None, None]
        for block in full.model.layers[:1]:  # by hand: block 0 only, then the final norm and head
            want = block(want, attention_mask=mask, position_embeddings=positions)
            want = want[0] if isinstance(want, tuple) else want
        want = full.lm_head(full.model.norm(want))
        torch.testing.assert_close(cut(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(full(input_ids=ids).logits, want, atol=1e-3)  # block 1 did change them


def test_layers_refuses_more_blocks_than_the_model_has(two_blocks, tiny_model_dir):
    with pytest.raises(ConfigError, match="model.layers: 3, but .* has 2 blocks"):
        load_model(ModelConfig(name=two_blocks, layers=3))
    with pytest.raises(ConfigError, match="not a single stack of blocks"):
        load_model(ModelConfig(name=tiny_model_dir("t5"), layers=1))


def test_an_adapter_of_the_cut_model_loads_on_the_cut_base(two_blocks, tmp_path):
    import tunewright
    from tunewright.models.load import base_model
    from tunewright.models.trained import load_trained

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i}"}) + "\n" for i in range(8)))
    result = tunewright.train({
        "model": {"name": two_blocks, "layers": 1},
        "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca", "cutoff_len": 128},
        "method": {"name": "lora", "r": 2, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "train": {"batch_size": 4, "micro_batch_size": 4, "max_steps": 1, "learning_rate": 0.01},
        "output": {"dir": str(tmp_path / "runs"), "name": "cut"}})
    assert json.loads((result.final_dir / "tunewright.json").read_text())["model_config"]["num_hidden_layers"] == 1
    model, _ = load_trained(result.run_dir)
    assert len(base_model(model).model.layers) == 1
