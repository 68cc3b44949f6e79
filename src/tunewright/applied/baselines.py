"""The classical baselines of the tabular report, fitted on the training split only.

    logistic   scikit-learn LogisticRegression on standardized numbers and one-hot categories
               (StandardScaler and OneHotEncoder inside one Pipeline: `fit` sees the training rows
               only, so no statistic of the test split leaks into the features)
    xgboost    XGBoost (Chen & Guestrin 2016) gradient-boosted trees on the same one-hot features,
               the CPU build (`xgboost-cpu`); 200 trees of depth 4, learning rate 0.1, seeded

Both return P(target == positive) for the test rows; accuracy thresholds it at 0.5.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["BASELINES", "features_of", "fit_pipeline", "baseline_scores"]


def features_of(rows: list[dict], target: str = "target") -> tuple[list[str], list[str]]:
    """(numeric columns, categorical columns): a column is numeric when every training value is a number."""
    names = [c for c in rows[0] if c != target]
    numeric = [c for c in names if all(isinstance(r[c], (int, float)) and not isinstance(r[c], bool) for r in rows)]
    return numeric, [c for c in names if c not in numeric]


def _preprocess(numeric: list[str], categorical: list[str]):
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer([("numbers", StandardScaler(), numeric),
                              ("categories", OneHotEncoder(handle_unknown="ignore"), categorical)])


def _logistic():
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(max_iter=2000)


def _xgboost():
    from xgboost import XGBClassifier
    return XGBClassifier(n_estimators=200, max_depth=4, learning_rate=0.1, random_state=0, n_jobs=1,
                         eval_metric="logloss")


BASELINES: dict[str, Callable] = {"logistic": _logistic, "xgboost": _xgboost}


def fit_pipeline(name: str, train: list[dict], target: str = "target", positive: str = "Yes"):
    """The baseline `name` as a scikit-learn Pipeline (preprocessing + model), fitted on `train` only."""
    import pandas as pd
    from sklearn.pipeline import Pipeline

    numeric, categorical = features_of(train, target)
    pipeline = Pipeline([("features", _preprocess(numeric, categorical)), ("model", BASELINES[name]())])
    frame = pd.DataFrame(train)
    return pipeline.fit(frame[numeric + categorical], (frame[target] == positive).astype(int))


def baseline_scores(name: str, train: list[dict], test: list[dict], target: str = "target",
                    positive: str = "Yes") -> dict:
    """{"accuracy", "auc"} of baseline `name` fitted on `train`, on `test`."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, roc_auc_score

    pipeline = fit_pipeline(name, train, target, positive)
    frame = pd.DataFrame(test)
    numeric, categorical = features_of(train, target)
    probs = pipeline.predict_proba(frame[numeric + categorical])[:, 1]
    truth = (frame[target] == positive).astype(int)
    return {"accuracy": float(accuracy_score(truth, probs >= 0.5)), "auc": float(roc_auc_score(truth, probs))}
