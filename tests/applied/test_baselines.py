"""The tabular report's classical baselines and datasets: fitted on the training split only, and the
lab's tabular task is learnable (the sanity line of the README's table)."""

import numpy as np
import pytest

from tunewright.applied.baselines import baseline_scores, features_of, fit_pipeline
from tunewright.applied.tabular_data import DATASETS, load_dataset, split_rows


def _rows():
    train = [{"size": float(i), "colour": "red" if i % 2 else "blue", "target": "Yes" if i > 4 else "No"}
             for i in range(10)]
    # the test rows sit far from the training ones and bring a colour never seen in training
    test = [{"size": 100.0 + i, "colour": "green", "target": "Yes"} for i in range(5)]
    return train, test


def test_scaler_and_encoder_see_the_training_split_only():
    train, test = _rows()
    pipeline = fit_pipeline("logistic", train)
    features = pipeline.named_steps["features"]
    scaler = features.named_transformers_["numbers"]
    sizes = np.array([r["size"] for r in train])
    assert scaler.mean_[0] == pytest.approx(sizes.mean()) and scaler.scale_[0] == pytest.approx(sizes.std())
    encoder = features.named_transformers_["categories"]
    assert [list(c) for c in encoder.categories_] == [["blue", "red"]]  # "green" (test only) is unknown


@pytest.mark.parametrize("name", ["logistic", "xgboost"])
def test_scores_are_accuracy_and_auc_of_the_fitted_pipeline(name):
    from sklearn.metrics import accuracy_score, roc_auc_score
    import pandas as pd

    data = load_dataset("wine")
    got = baseline_scores(name, data.train, data.test)
    numeric, categorical = features_of(data.train)
    frame = pd.DataFrame(data.test)
    probs = fit_pipeline(name, data.train).predict_proba(frame[numeric + categorical])[:, 1]
    truth = [r["target"] == "Yes" for r in data.test]
    assert got["auc"] == pytest.approx(roc_auc_score(truth, probs), abs=1e-12)
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, probs >= 0.5), abs=1e-12)


def test_logistic_regression_learns_the_lab_task():
    """The lab's houses are learnable: logistic regression reaches AUC >= 0.80 on their test split."""
    data = load_dataset("lab")
    assert {r["target"] for r in data.test} == {"No", "Yes"}
    assert baseline_scores("logistic", data.train, data.test)["auc"] >= 0.80


def test_splits_are_stratified_disjoint_and_seeded():
    for name in DATASETS.names():
        if name == "lab":
            continue
        data = load_dataset(name)
        train, test = {tuple(sorted(r.items())) for r in data.train}, {tuple(sorted(r.items())) for r in data.test}
        assert not train & test
        share = lambda rows: sum(r["target"] == "Yes" for r in rows) / len(rows)  # noqa: E731
        assert share(data.train) == pytest.approx(share(data.test), abs=0.03)
        assert load_dataset(name).test == data.test
    rows = [{"x": i, "target": "Yes" if i < 30 else "No"} for i in range(100)]
    train, test = split_rows(rows, 0.3, seed=1)
    assert len(test) == 30 and sum(r["target"] == "Yes" for r in test) == 9
