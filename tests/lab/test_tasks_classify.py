"""Classification tasks: learnable by a bag-of-words model, but not to 100% (the 70-95% band)."""

from __future__ import annotations

import collections

import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from tunewright.lab.tasks_classify import SENTIMENT_LABELS, TOPIC_LABELS, sentiment, topic


def _bow_accuracy(splits) -> float:
    vectorizer = CountVectorizer()
    x = vectorizer.fit_transform([r["text"] for r in splits["train"]])
    model = LogisticRegression().fit(x, [r["label"] for r in splits["train"]])
    return model.score(vectorizer.transform([r["text"] for r in splits["test"]]), [r["label"] for r in splits["test"]])


@pytest.mark.parametrize("task, seed", [(sentiment, 0), (sentiment, 1), (topic, 0), (topic, 1)])
def test_bag_of_words_logistic_regression_lands_between_70_and_95_percent(task, seed):
    accuracy = _bow_accuracy(task(seed=seed))
    assert 0.70 <= accuracy <= 0.95, accuracy


@pytest.mark.parametrize("task, labels", [(sentiment, SENTIMENT_LABELS), (topic, TOPIC_LABELS)])
def test_labels_are_balanced_and_rows_are_text_label(task, labels):
    rows = task(n_train=800, n_val=10, n_test=10)["train"]
    assert all(list(r) == ["text", "label"] and r["text"].strip() for r in rows)
    counts = collections.Counter(r["label"] for r in rows)
    assert set(counts) == set(labels) and min(counts.values()) > 0.7 * len(rows) / len(labels)


def test_label_noise_lowers_the_ceiling():
    """The label noise is real: turning it off raises the ceiling the test band guards."""
    noisy = _bow_accuracy(sentiment(seed=2))
    clean = _bow_accuracy(sentiment(seed=2, noise=0.0))
    assert clean > noisy + 0.03


def test_reviews_use_negation_and_mixed_opinions():
    texts = [r["text"] for r in sentiment(n_train=400, n_val=10, n_test=10)["train"]]
    assert sum(" not " in t for t in texts) > 40
    positives = [r for r in sentiment(n_train=400, n_val=10, n_test=10)["train"] if r["label"] == "positive"]
    assert any("terrible" in r["text"] or "awful" in r["text"] for r in positives)


def test_topic_labels_keep_only_the_chosen_topics_and_the_default_is_unchanged():
    two = topic(seed=3, n_train=200, n_val=0, n_test=40, labels=["sports", "science"])
    assert {r["label"] for r in two["train"]} == {"sports", "science"}
    assert {r["label"] for r in two["test"]} == {"sports", "science"}
    assert topic(seed=3, n_train=50, n_val=0, n_test=0) == topic(seed=3, n_train=50, n_val=0, n_test=0,
                                                                  labels=list(TOPIC_LABELS))


@pytest.mark.parametrize("labels, message", [(["sports", "sience"], "'sience' \\(did you mean \"science\"\\?\\) is not one"),
                                             (["sports"], "give two or more different topics"),
                                             (["sports", "sports"], "give two or more different topics")])
def test_topic_labels_must_be_two_known_topics(labels, message):
    from tunewright.errors import ConfigError
    with pytest.raises(ConfigError, match=message):
        topic(labels=labels)
