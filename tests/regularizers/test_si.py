"""SI: Ω equals a path integral worked by hand over 3 SGD-with-momentum steps, and the penalty's
gradient is 2c·Ω(θ−θ*) in the next task."""

from __future__ import annotations

import pytest
import torch

from tunewright.regularizers import si
from tunewright.regularizers.hook import setup_regularizers


def test_omega_equals_the_hand_worked_three_step_path(tmp_path):
    """L = w0² (w1 has no gradient), SGD lr 0.1 with momentum 0.5 from w = (1, 0.5), ξ = 0.1:

        step  g = 2·w0   momentum buffer   Δw0 = −0.1·buffer   w0 after   −g·Δw0
        1     2.0        2.0               −0.2                0.8        0.4
        2     1.6        2.6               −0.26               0.54       0.416
        3     1.08       2.38              −0.238              0.302      0.25704
                                                                          ω0 = 1.07304
    Ω0 = ω0 / ((0.302 − 1)² + 0.1) = 1.07304 / 0.587204; Ω1 = 0 (it never moved).
    With momentum Δw ≠ −lr·g: a step-size shortcut would give another number."""
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.5]]))
    hook = setup_regularizers([si.Config(weight=0.25, xi=0.1)], model, tmp_path)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    for _ in range(3):
        assert hook.add_penalty(model)[0] == 0  # the first task: no anchor yet
        (model.weight[0, 0] ** 2).backward()
        opt.step()
        hook.after_step(model)
        opt.zero_grad()
    state = hook.members[0].state
    torch.testing.assert_close(state["omega"]["weight"], torch.tensor([[1.07304, 0.0]]))
    hook.finish(model, lambda: iter(()), loss=None)

    torch.testing.assert_close(state["importance"]["weight"], torch.tensor([[1.07304 / 0.587204, 0.0]]))
    torch.testing.assert_close(state["anchor"]["weight"], torch.tensor([[0.302, 0.5]]))
    assert float(state["omega"]["weight"].abs().sum()) == 0 and state["tasks"] == 1  # the next task starts afresh

    hook.save(tmp_path / "regularizers")  # the next task: c·ΣΩ(θ−θ*)², gradient 2c·Ω(θ−θ*)
    nxt = setup_regularizers([si.Config(weight=0.25, previous=str(tmp_path / "regularizers"))], model, tmp_path)
    with torch.no_grad():
        model.weight.add_(torch.tensor([[0.2, 0.2]]))
    penalty, _ = nxt.add_penalty(model)
    omega0 = 1.07304 / 0.587204
    assert penalty == pytest.approx(0.25 * omega0 * 0.04, rel=1e-5)
    torch.testing.assert_close(model.weight.grad, torch.tensor([[2 * 0.25 * omega0 * 0.2, 0.0]]))
