"""Every recipe validates, and runs end to end in its smoke mode: the loss falls and the recipe's
own keys took effect (not only the exit code)."""

import json
from pathlib import Path

import pytest
import yaml

from tunewright.config import apply_overrides, load_config

ALL = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
CONTINUAL = [p for p in ALL if p.stem.startswith("continual_")]  # task sequences: their own schema
RECIPES = [p for p in ALL if p not in CONTINUAL]


def _leaves(tree, prefix=""):
    """Dotted key -> value for every scalar/list leaf of a nested dict."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], tree


def test_there_are_recipes():
    assert {p.stem for p in RECIPES} >= {"alpaca_lora", "continued_pretraining"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates(recipe):
    cfg = load_config(recipe)
    assert cfg.output.name == recipe.stem
    assert recipe.read_text().startswith("#")  # opens with what it is and the command to run


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_smoke_mode(recipe, tmp_path, monkeypatch):
    from tunewright.run import train
    from tunewright.training.logging import read_metrics

    monkeypatch.chdir(recipe.parents[1])  # recipes name their data relative to the repository
    out = [f"output.dir={tmp_path}"]
    cfg = load_config(recipe, out, smoke=True)
    result = train(cfg)

    metrics = read_metrics(result.run_dir)
    if cfg.objective.name in ("ppo", "grpo", "rloo"):  # no held-out loss (refused): the rollouts' own figures
        steps = [m for m in metrics if "reward" in m]
        assert [m["step"] for m in steps] == list(range(1, cfg.smoke.max_steps + 1))
        assert all(m["answer_length"] > 0 and m["entropy"] > 0 for m in steps)
        assert steps[0]["kl"] == 0 and steps[-1]["kl"] != 0  # the first rollout is the reference's own
        if getattr(cfg.objective, "adaptive_kl", None) is not None:  # ppo's coefficient moved toward the target
            assert steps[-1]["kl_coef"] != cfg.objective.kl_coef
    else:
        evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
        assert len(evals) >= 2 and evals[-1] < evals[0], evals
    assert result.steps == cfg.smoke.max_steps

    # every key the recipe wrote is in force, except those its smoke section replaces
    raw = yaml.safe_load(recipe.read_text())
    smoke = raw.pop("smoke", {})
    replaced = {"model.name", "train.max_steps", "output.name", "output.dir",
                *(o.split("=")[0] for o in smoke.get("overrides", []))}
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    expected = apply_overrides(json.loads(json.dumps(raw)), [])
    saved_leaves = dict(_leaves(saved))
    for key, value in _leaves(expected):
        if key in replaced or key.startswith("data.datasets") or key.startswith("data.eval_datasets"):
            continue
        assert saved_leaves[key] == value, key

    # and the method's keys reached what was trained
    method = raw.get("method", {})
    if method.get("name", "lora") == "lora":
        adapter = json.loads((result.final_dir / "adapter_config.json").read_text())
        assert adapter["r"] == method["r"] and adapter["lora_alpha"] == method["lora_alpha"]
        targets = method["target_modules"]
        if targets != "all-linear":
            assert sorted(adapter["target_modules"]) == sorted(targets)
        else:
            assert len(adapter["target_modules"]) >= 4


def test_multitask_recipe_mixes_four_phrased_tasks_and_never_trains_on_the_held_out_one(monkeypatch):
    from tunewright.data.mixture import build_splits
    from tunewright.eval.config import load_eval_config

    root = RECIPES[0].parents[1]
    monkeypatch.chdir(root)
    cfg = load_config(root / "recipes" / "multitask.yaml")
    tasks = [Path(src.path).parent.name for src in cfg.data.datasets]
    assert len(set(tasks)) >= 4 and "world_qa" not in tasks
    assert all(src.phrasings == task and max(src.shots) > 0 for src, task in zip(cfg.data.datasets, tasks))
    compare = load_eval_config(root / "recipes" / "eval" / "multitask_heldout.yaml")
    assert compare.data.group_by == "task" and compare.candidates[1].run == "runs/multitask"
    tested = {json.loads(line)["task"] for line in Path(compare.data.path).read_text().splitlines()}
    assert tested == {*tasks, "world_qa"}

    held = Path("recipes/data/multitask/world_qa")
    assert held.joinpath("train.jsonl").read_text() == held.joinpath("validation.jsonl").read_text() == ""
    held_rows = [json.loads(line) for line in held.joinpath("test.jsonl").read_text().splitlines()]
    train, evals, _ = build_splits(cfg.data, cfg.train.seed)
    seen = "\n".join(m.content + "\n" + (m.context or "") for ex in train + evals for m in ex.messages)
    assert len(held_rows) == 20 and len(train) == 640
    for row in held_rows:  # neither the question nor its paragraph reaches training, phrased or as an example
        assert row["instruction"] not in seen and row["input"] not in seen
    assert {ex.meta.get("phrasing") for ex in train} == set(range(1, 11))


@pytest.mark.parametrize("recipe", CONTINUAL, ids=lambda p: p.stem)
def test_continual_recipe_validates(recipe):
    from tunewright.continual.config import load_continual_config
    cfg = load_continual_config(recipe)
    assert cfg.output.name == recipe.stem and recipe.read_text().startswith("#")
    assert len(cfg.tasks) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("recipe", CONTINUAL, ids=lambda p: p.stem)
def test_continual_recipe_smoke_mode(recipe, tmp_path, monkeypatch):
    """`continual compare --smoke` with naive and ewc: every task trained, R (and P, one score per
    probe, when the recipe has probes), the report and the recipe's strategy settings in force in the
    tasks' runs."""
    from tunewright.cli import main

    monkeypatch.chdir(recipe.parents[1])
    assert main(["continual", "compare", str(recipe), f"output.dir={tmp_path}", "--smoke",
                 "--strategies", "naive,ewc"]) == 0
    out = tmp_path / f"{recipe.stem}-smoke"
    results = json.loads((out / "results.json").read_text())
    raw = yaml.safe_load(recipe.read_text())
    n = len(raw["tasks"])
    for name in ("naive", "ewc"):
        assert len(results["strategies"][name]["R"]) == n and (out / f"heatmap-{name}.png").is_file()
        if raw.get("probes"):
            P = [results["strategies"][name]["zero_shot_P"], *results["strategies"][name]["P"]]
            assert len(P) == n + 1 and all(len(row) == len(raw["probes"]) for row in P)
    last = yaml.safe_load((out / "ewc" / f"{n - 1}-{raw['tasks'][-1]['name']}" / "config.yaml").read_text())
    assert last["regularizers"][0]["weight"] == raw["strategies"]["ewc"]["weight"]
    assert last["train"]["max_steps"] == raw["smoke"]["max_steps"]
