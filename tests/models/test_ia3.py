"""IA3 (models/methods/ia3.py): vectors at one are the base exactly; the keys reach peft."""

from __future__ import annotations

import pytest
import torch

from tunewright.config import ModelConfig
from tunewright.errors import ConfigError
from tunewright.models.load import load_model
from tunewright.models.methods import ia3

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[1, 5, 9, 7, 3, 11], [1, 8, 4, 6, 2, 10]])


def logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_vectors_at_one_are_the_base_exactly_and_moving_one_moves_the_output(arch, tiny_model_dir):
    path = tiny_model_dir(arch)
    base = logits(load_model(ModelConfig(name=path)))
    model = ia3.apply(load_model(ModelConfig(name=path)), ia3.Config())
    vectors = [p for n, p in model.named_parameters() if p.requires_grad]
    assert vectors and all(torch.equal(v, torch.ones_like(v)) for v in vectors)
    assert torch.equal(logits(model), base)
    with torch.no_grad():
        vectors[0].mul_(1.5)  # a vector that were not in the forward would leave the logits alone
    assert (logits(model) - base).abs().max() > 1e-3


def test_target_and_feedforward_modules_reach_peft(tiny_model_dir):
    model = ia3.apply(load_model(ModelConfig(name=tiny_model_dir("llama"))),
                      ia3.Config(target_modules=["q_proj", "up_proj"], feedforward_modules=["up_proj"]))
    pc = model.peft_config["default"]
    assert set(pc.target_modules) == {"q_proj", "up_proj"} and set(pc.feedforward_modules) == {"up_proj"}
    shapes = {n.split(".ia3_l")[0].rsplit(".", 1)[-1]: tuple(p.shape) for n, p in model.named_parameters()
              if p.requires_grad}
    assert shapes == {"q_proj": (64, 1), "up_proj": (1, 64)}  # attention scales its output, feed-forward its input


def test_settings_are_checked():
    with pytest.raises(ValueError, match=r"feedforward_modules \['down_proj'\] are not in target_modules"):
        ia3.Config(target_modules=["k_proj"], feedforward_modules=["down_proj"])
    with pytest.raises(ValueError, match="needs target_modules"):
        ia3.Config(feedforward_modules=["down_proj"])


def test_unknown_module_names_the_linear_layers(tiny_model_dir):
    with pytest.raises(ConfigError, match="method.target_modules: 'kproj' matches no module .* k_proj"):
        ia3.apply(load_model(ModelConfig(name=tiny_model_dir("llama"))), ia3.Config(target_modules=["kproj"]))
