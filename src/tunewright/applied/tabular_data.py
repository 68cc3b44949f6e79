"""The tabular report's datasets, as rows with a Yes/No `target`, split once (seeded, stratified).

    lab            the lab's houses: is the price above the median? (7 features, 3 of them categorical)
    breast_cancer  scikit-learn's Wisconsin breast cancer: is the tumour benign? (its 10 "mean" features:
                   the 30 make ~400-token prompts, too slow for a 2-core recording)
    wine           scikit-learn's wine: is it of cultivar class 0? (13 features; class 0 against the rest)
    diabetes       scikit-learn's diabetes: is the disease progression after a year above the median?
                   (10 features, unscaled)

scikit-learn ships all three, so nothing is downloaded (the course's California housing would be).
Each dataset comes with the question its prompts end in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from tunewright.registry import Registry

__all__ = ["TabularSet", "DATASETS", "load_dataset", "split_rows"]


@dataclass
class TabularSet:
    name: str
    question: str
    train: list[dict]
    test: list[dict]


def split_rows(rows: list[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test): a seeded shuffle of each target class, the last `test_fraction` of each to test."""
    rng = random.Random(f"tabular-split:{seed}")
    train, test = [], []
    for value in sorted({r["target"] for r in rows}):
        group = [r for r in rows if r["target"] == value]
        rng.shuffle(group)
        cut = len(group) - round(len(group) * test_fraction)
        train += group[:cut]
        test += group[cut:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def _sklearn(loader, keep, target) -> list[dict]:
    frame = loader(as_frame=True).frame
    rows = []
    for record in frame.to_dict(orient="records"):
        row = {name: round(float(record[name]), 4) for name in keep(frame)}
        row["target"] = target(record, frame)
        rows.append(row)
    return rows


def _lab(seed: int, n: int) -> tuple[list[dict], list[dict]]:
    from tunewright.lab.tasks import make_task

    splits = make_task("tabular", seed=seed, n_train=n, n_val=0, n_test=max(100, n // 3))
    return splits["train"], splits["test"]


def _breast_cancer(seed: int, n: int):
    from sklearn.datasets import load_breast_cancer

    rows = _sklearn(load_breast_cancer, lambda f: [c for c in f.columns if c.startswith("mean ")],
                    lambda r, f: "Yes" if r["target"] == 1 else "No")  # 1: benign
    return split_rows(rows, 0.3, seed)


def _wine(seed: int, n: int):
    from sklearn.datasets import load_wine

    rows = _sklearn(load_wine, lambda f: [c for c in f.columns if c != "target"],
                    lambda r, f: "Yes" if r["target"] == 0 else "No")
    return split_rows(rows, 0.3, seed)


def _diabetes(seed: int, n: int):
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    median = float(frame["target"].median())
    rows = _sklearn(lambda as_frame: load_diabetes(as_frame=as_frame, scaled=False),
                    lambda f: [c for c in f.columns if c != "target"],
                    lambda r, f: "Yes" if r["target"] > median else "No")
    return split_rows(rows, 0.3, seed)


DATASETS: Registry[tuple[Callable, str]] = Registry("tabular dataset")
DATASETS.register("lab", (_lab, "Is the price of the house above the median? Answer Yes or No."))
DATASETS.register("breast_cancer", (_breast_cancer, "Is the tumour benign? Answer Yes or No."))
DATASETS.register("wine", (_wine, "Is this wine of cultivar class 0? Answer Yes or No."))
DATASETS.register("diabetes", (_diabetes, "Is the disease progression after one year above the median? "
                                          "Answer Yes or No."))


def load_dataset(name: str, seed: int = 0, n_lab: int = 600) -> TabularSet:
    """Dataset `name` split into train and test (`n_lab` training rows for the lab's generated houses)."""
    make, question = DATASETS.get(name)
    train, test = make(seed, n_lab)
    return TabularSet(name, question, train, test)
