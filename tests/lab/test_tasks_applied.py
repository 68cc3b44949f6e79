"""Preferences follow their hidden rule; recommendation rows agree with their prompt (one domain or both);
ratings are per-user time series of one taste; tabular is learnable."""

from __future__ import annotations

import re

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import pytest

from tunewright.errors import ConfigError
from tunewright.lab.tasks_applied import (CONDITIONS, GENRES, TABULAR_FEATURES, follows_rule, preferences, ratings,
                                          recommendation, tabular)

N = dict(n_train=300, n_val=30, n_test=60)


def test_preference_rule_chosen_is_correct_and_concise():
    splits = preferences(**N)
    kinds = set()
    for r in [r for rows in splits.values() for r in rows]:
        assert list(r) == ["prompt", "chosen", "rejected", "rejected_kind"] and r["chosen"] != r["rejected"]
        m = re.fullmatch(r"What is (\d+) (\+|-|×) (\d+)\?", r["prompt"])
        if m:
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            right = str({"+": a + b, "-": a - b, "×": a * b}[op])
        else:  # a question about the paragraph above it: the right answer is stated there
            right = r["chosen"]
            assert right in r["prompt"].split("\n\nQuestion:")[0]
        assert r["chosen"] == right
        padded = re.search(r" The answer is (.+?)\. ", r["rejected"])
        verbose = padded is not None and len(r["rejected"]) > len(right) + 40
        wrong = (padded.group(1) if padded else r["rejected"]) != right
        assert verbose or wrong
        assert r["rejected_kind"] == {(False, True): "wrong", (True, False): "verbose", (True, True): "both"}[
            (verbose, wrong)]
        kinds.add((verbose, wrong))
    assert kinds == {(True, False), (False, True), (True, True)}


def test_follows_rule_accepts_every_chosen_answer_and_no_rejected_one():
    rows = [r for rows in preferences(**N).values() for r in rows]
    assert all(follows_rule(r["chosen"], r["chosen"]) == (True, True) for r in rows)
    supersets = 0
    for r in rows:  # the kind of each rejected answer is what the checker finds wrong with it
        correct, concise = follows_rule(r["rejected"], r["chosen"])
        wrong, verbose = {"wrong": (True, False), "verbose": (False, True), "both": (True, True)}[r["rejected_kind"]]
        assert (not concise) == verbose, r
        # the checker's known blind spot: a wrong list of hobbies that holds the right one ("climbing,
        # sailing and singing" for "sailing") reads as correct
        if wrong and correct:
            assert " and " in r["rejected"] and r["chosen"] in r["rejected"], r
            supersets += 1
        else:
            assert correct != wrong, r
    assert supersets < 0.05 * len(rows), supersets
    # a whole word only: a number inside a longer number or a decimal is not the answer
    assert follows_rule("1234", "123")[0] is False and follows_rule("12.3", "12")[0] is False
    assert follows_rule("The answer is 123.", "123") == (True, True)
    assert follows_rule("-5", "5")[0] is False
    # four words more than the answer is still concise, five is not
    assert follows_rule("chess and climbing, I think, really, yes", "chess and climbing")[1] is True
    assert follows_rule("chess and climbing, as far as I know", "chess and climbing")[1] is False

def test_recommendation_rows_agree_with_their_prompt():
    rows = recommendation(**N)["train"]
    for r in rows:
        assert list(r) == ["user", "domain", "liked", "disliked", "candidate", "label", "prompt"]
        assert r["label"] in ("Yes", "No") and r["domain"] in ("books", "films")
        assert f"Will the user like {r['candidate']} (" in r["prompt"] and r["prompt"].endswith("Answer Yes or No.")
        liked_part, disliked_part = r["prompt"].split(" The user disliked ")
        assert all(t in liked_part for t in r["liked"]) and all(t in disliked_part for t in r["disliked"])
        assert r["candidate"] not in r["liked"] + r["disliked"]
        assert 4 <= len(r["liked"]) + len(r["disliked"]) <= 8
    genres = set(re.findall(r"\(an? ([a-z ]+) (?:book|film)\)", " ".join(r["prompt"] for r in rows)))
    assert genres == set(GENRES)
    assert {r["domain"] for r in rows} == {"books", "films"}


def test_recommendation_labels_follow_latent_taste():
    """A user who liked a genre tends to like the next item of it: liked genres predict Yes."""
    agree = total = 0
    for r in recommendation(n_train=1500, n_val=10, n_test=10)["train"]:
        cand = re.search(r"Will the user like .+ \(an? ([a-z ]+) (?:book|film)\)", r["prompt"]).group(1)
        liked_part, disliked_part = r["prompt"].split(" Will the user like ")[0].split(" The user disliked ")
        ups, downs = liked_part.count(f" {cand} "), disliked_part.count(f" {cand} ")
        if ups != downs:
            total += 1
            agree += (ups > downs) == (r["label"] == "Yes")
    assert agree / total > 0.75


def test_tabular_rows_have_the_features_and_a_learnable_noisy_target():
    splits = tabular()
    for r in splits["train"][:50]:
        assert tuple(r) == TABULAR_FEATURES + ("target",)
        assert r["condition"] in CONDITIONS and r["garden"] in ("yes", "no") and r["target"] in ("Yes", "No")

    def features(r):
        return [r["area_m2"], r["rooms"], r["age_years"], r["distance_km"], r["garden"] == "yes",
                *(r["condition"] == c for c in CONDITIONS)]

    model = make_pipeline(StandardScaler(), LogisticRegression()).fit([features(r) for r in splits["train"]],
                                                  [r["target"] for r in splits["train"]])
    accuracy = model.score([features(r) for r in splits["test"]], [r["target"] for r in splits["test"]])
    assert 0.7 < accuracy < 0.97  # learnable from the features, but the rule is noisy (and city is left out here)
    share = sum(r["target"] == "Yes" for r in splits["train"]) / len(splits["train"])
    assert 0.4 < share < 0.6  # the median threshold splits the houses in halves


def test_recommendation_keeps_to_one_domain_when_asked():
    for domain, noun in (("books", "book"), ("films", "film")):
        rows = recommendation(**N, domain=domain)["test"]
        assert {r["domain"] for r in rows} == {domain}
        assert re.findall(r"\(an? [a-z ]+ (book|film)\)", " ".join(r["prompt"] for r in rows)) == \
            [noun] * len(re.findall(r"\(an? [a-z ]+ (?:book|film)\)", " ".join(r["prompt"] for r in rows)))
    with pytest.raises(ConfigError, match='domain: unknown \'book\' \\(did you mean "books"\\?\\)'):
        recommendation(**N, domain="book")


def test_ratings_are_time_ordered_per_user_and_follow_taste():
    splits = ratings(n_train=900, n_val=60, n_test=120)
    users = {s: {r["user"] for r in rows} for s, rows in splits.items()}
    assert not (users["train"] & users["test"]) and not (users["train"] & users["validation"])
    by_user: dict = {}
    for r in splits["train"]:
        assert list(r) == ["user", "item", "domain", "rating", "time"] and r["rating"] in (1, 2, 3, 4, 5)
        by_user.setdefault(r["user"], []).append(r)
    for rows in by_user.values():
        times = [r["time"] for r in rows]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert len({r["item"] for r in rows}) == len(rows)  # no item rated twice
    # a user's stars for a genre agree across its items: the genre mean explains most of the spread
    agree = total = 0
    for rows in by_user.values():
        genre = lambda r: re.search(r"\(an? ([a-z ]+) (?:book|film)\)", r["item"]).group(1)  # noqa: E731
        for r in rows:
            others = [o["rating"] for o in rows if o is not r and genre(o) == genre(r)]
            if others and abs(sum(others) / len(others) - 3) >= 1:
                total += 1
                agree += (sum(others) / len(others) > 3) == (r["rating"] > 3)
    assert agree / total > 0.8
