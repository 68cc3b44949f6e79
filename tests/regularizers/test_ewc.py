"""EWC: the penalty and its gradient are λ/2·ΣF(θ−θ*)² and λF(θ−θ*) on a two-layer toy; the Fisher
is the mean of per-row squared gradients (a per-row loop agrees, the squared batch gradient does
not); the online variant decays the older Fisher by γ; the next task reads F and θ* from the
previous task's saved state; 4 micro-batches of 2 give the update of 1 batch of 8 with EWC on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunewright.regularizers import ewc
from tunewright.regularizers.hook import setup_regularizers
from tunewright.regularizers.state import write_state


def _toy() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # frozen: no Fisher, no anchor, no gradient
    return model


def _rows(n: int = 6) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(1, 3, generator=g), "y": torch.randint(0, 2, (1,), generator=g)} for _ in range(n)]


def _loss(model, batch):  # a row's summed loss, as an objective gives it
    return F.cross_entropy(model(batch["x"]), batch["y"], reduction="sum")


def _trainable(model) -> dict:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def test_penalty_and_gradient_equal_the_hand_formula(tmp_path):
    model = _toy()
    g = torch.Generator().manual_seed(2)
    fisher = {n: torch.rand(p.shape, generator=g) for n, p in _trainable(model).items()}
    anchor = {n: p.detach() + torch.randn(p.shape, generator=g) for n, p in _trainable(model).items()}
    previous = tmp_path / "previous"
    write_state(previous, "ewc", {}, {"tasks": 1, "importance": fisher, "anchor": anchor})
    hook = setup_regularizers([ewc.Config(weight=0.7, previous=str(previous))], model, tmp_path)

    penalty, metrics = hook.add_penalty(model)

    params = _trainable(model)
    by_hand = sum(float((fisher[n].double() * (params[n].detach().double() - anchor[n].double()) ** 2).sum())
                  for n in params)
    assert penalty == pytest.approx(0.7 / 2 * by_hand, rel=1e-6) and by_hand > 0.1
    assert metrics["reg_ewc_distance"] == pytest.approx(by_hand ** 0.5, rel=1e-6)
    for name, p in model.named_parameters():
        if name not in params:
            assert p.grad is None
            continue
        torch.testing.assert_close(p.grad, 0.7 * fisher[name] * (p.detach() - anchor[name]), rtol=1e-6, atol=1e-7)


def test_the_fisher_is_the_mean_of_per_row_squared_gradients():
    model, rows = _toy(), _rows()
    expected = {n: torch.zeros_like(p) for n, p in _trainable(model).items()}
    for row in rows:  # the per-row loop, by backward()
        model.zero_grad()
        _loss(model, row).backward()
        for n, p in _trainable(model).items():
            expected[n] += p.grad ** 2 / len(rows)
    model.zero_grad()

    got = ewc.fisher(model, iter(rows), _loss, samples=len(rows))

    assert got.keys() == expected.keys()
    for n in got:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-5, atol=1e-8)
    # the square of the batch's mean gradient is another (smaller) number: the rows' gradients cancel
    batch_loss = sum(_loss(model, r) for r in rows) / len(rows)
    squared_mean = {n: g ** 2 for n, g in zip(got, torch.autograd.grad(batch_loss, list(_trainable(model).values())))}
    assert all(float((got[n] - squared_mean[n]).abs().max()) > 1e-3 for n in got)
    # only the first `samples` rows count
    first_two = ewc.fisher(model, iter(rows), _loss, samples=2)
    again = ewc.fisher(model, iter(rows[:2]), _loss, samples=10)
    assert all(torch.equal(first_two[n], again[n]) for n in got)


def test_online_ewc_decays_the_older_fisher_and_moves_the_anchor(tmp_path):
    model, rows = _toy(), _rows()
    state = ewc.setup(model, tmp_path, ewc.Config(gamma=0.5))
    ewc.finish(model, iter(rows[:3]), state, _loss)
    first, anchor_one = dict(state["importance"]), dict(state["anchor"])
    assert state["tasks"] == 1
    with torch.no_grad():
        model[2].weight.add_(0.3)  # the second task moved the weights
    ewc.finish(model, iter(rows[3:]), state, _loss)
    second = ewc.fisher(model, iter(rows[3:]), _loss, samples=200)
    for n in first:
        torch.testing.assert_close(state["importance"][n], 0.5 * first[n] + second[n])
    torch.testing.assert_close(state["anchor"]["2.weight"], anchor_one["2.weight"] + 0.3)
    assert state["tasks"] == 2 and "0.bias" not in state["anchor"]


def test_the_next_task_reads_fisher_and_anchor_from_the_previous_final(tmp_path):
    model, rows = _toy(), _rows()
    hook = setup_regularizers([ewc.Config()], model, tmp_path)
    penalty, _ = hook.add_penalty(model)
    assert penalty == 0  # the first task: nothing to hold on to
    hook.finish(model, lambda: iter(rows), _loss)
    hook.save(tmp_path / "final" / "regularizers")

    nxt = setup_regularizers([ewc.Config(weight=3.0, previous=str(tmp_path / "final" / "regularizers"))],
                             model, tmp_path)
    state = nxt.members[0].state
    assert state["tasks"] == 1 and state["weight"] == 3.0
    for n, f in hook.members[0].state["importance"].items():
        assert torch.equal(state["importance"][n], f) and torch.equal(state["anchor"][n], _trainable(model)[n])
    with torch.no_grad():
        model[2].weight.add_(0.1)
    penalty, _ = nxt.add_penalty(model)
    assert penalty == pytest.approx(3.0 / 2 * float((state["importance"]["2.weight"] * 0.01).sum()), rel=1e-5)


def test_four_micro_batches_of_two_equal_one_batch_of_eight_with_ewc(tmp_path, tiny_model_dir, loop_train):
    """The penalty enters once per optimizer step: counted per micro-batch it would be 4x as strong."""
    from transformers import AutoModelForCausalLM
    model_dir = tiny_model_dir("llama")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    previous = tmp_path / "previous"
    write_state(previous, "ewc", {}, {
        "tasks": 1, "importance": {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()},
        "anchor": {n: p.detach() + 0.05 * torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}})
    on = [ewc.Config(weight=2.0, previous=str(previous))]
    small_log, large_log = [], []
    small = loop_train(model_dir, 2, 2, on, log=small_log)
    large = loop_train(model_dir, 8, 2, on, log=large_log)
    assert max(float((small[n] - large[n]).abs().max()) for n in small) < 1e-6
    assert small_log[0]["reg_ewc"] == pytest.approx(large_log[0]["reg_ewc"], rel=1e-6) and small_log[0]["reg_ewc"] > 0
    off = loop_train(model_dir, 8, 2, [])
    assert max(float((off[n] - large[n]).abs().max()) for n in off) > 1e-3  # the penalty did move the weights


def test_a_large_weight_holds_the_most_important_weights_and_none_lets_them_move(tmp_path):
    """Task A (class = sign of x0), its Fisher, then task B (class = sign of x1) by gradient descent
    (lr 0.3, 500 steps): with λ = 1/(lr·max F) (the strongest pull plain gradient descent takes
    without oscillating) the two weights of largest F stay within 1e-3 of θ*; with λ = 0 they move
    by more than 0.1."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.randn(32, 4, generator=g), torch.randn(32, 4, generator=g)
    ya, yb = (xa[:, 0] > 0).long(), (xb[:, 1] > 0).long()

    def descend(m, x, y, steps, hook=None):
        opt = torch.optim.SGD(m.parameters(), lr=0.3)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            if hook is not None:
                hook.add_penalty(m)
            opt.step()

    descend(model, xa, ya, 200)
    first = setup_regularizers([ewc.Config()], model, tmp_path)
    first.finish(model, lambda: ({"x": xa[i:i + 1], "y": ya[i:i + 1]} for i in range(32)), _loss)
    first.save(tmp_path / "a")
    fisher, anchor = first.members[0].state["importance"], first.members[0].state["anchor"]
    ranked = sorted(((float(f), n, i) for n, t in fisher.items() for i, f in enumerate(t.flatten())), reverse=True)
    top = ranked[:2]

    moved = {}
    for lam in (0.0, 1 / (0.3 * ranked[0][0])):
        m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        m.load_state_dict(model.state_dict())
        descend(m, xb, yb, 500, setup_regularizers([ewc.Config(weight=lam, previous=str(tmp_path / "a"))], m, tmp_path))
        params = dict(m.named_parameters())
        moved[lam] = [float((params[n].detach().flatten()[i] - anchor[n].flatten()[i]).abs()) for _, n, i in top]
    free, held = moved.values()
    assert all(d > 0.1 for d in free) and all(d < 1e-3 for d in held), moved
