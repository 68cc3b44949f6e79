"""Continued-pretraining text: every document kind, held-out entities, and the no-holdout variant."""

from __future__ import annotations

import re

from tunewright.lab.tasks_text import pretraining_text
from tunewright.lab.world import make_world, partition


def test_documents_cover_every_kind():
    texts = [r["text"] for r in pretraining_text(n_train=600, n_val=10, n_test=10)["train"]]
    assert any(" out of 5" in t for t in texts)  # product paragraphs
    assert any(CITY_PARAGRAPH.search(t) for t in texts)  # cities
    assert any(re.match(r"\w+: ", t) and "\n" in t for t in texts)  # dialogues
    assert any("recommend" in t or "stars" in t.lower() for t in texts)  # reviews
    assert any("free time" in t or "hobbies" in t or "a love of" in t for t in texts)  # people
    assert all(list(r) == ["text"] for r in pretraining_text(n_train=20, n_val=2, n_test=2)["test"])


CITY_PARAGRAPH = re.compile(r"inhabitants|is a city of|people live there")


def test_held_out_documents_never_describe_a_shared_city():
    """Cities belong to every split, so a city paragraph in test text would be text seen in training."""
    splits = pretraining_text(n_train=300, n_val=100, n_test=200)
    assert any(CITY_PARAGRAPH.search(r["text"]) for r in splits["train"])
    assert not any(CITY_PARAGRAPH.search(r["text"]) for r in splits["test"] + splits["validation"])


def test_without_holdout_training_text_describes_the_test_people():
    world = make_world(0)
    test_people = {p.name for p in partition(world)["test"].people}
    held = " ".join(r["text"] for r in pretraining_text(n_train=1500, n_val=5, n_test=5)["train"])
    open_ = " ".join(r["text"] for r in pretraining_text(n_train=1500, n_val=5, n_test=5, holdout=False)["train"])
    assert not any(name in held for name in test_people)
    assert sum(name in open_ for name in test_people) > 30
