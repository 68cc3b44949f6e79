"""The synthetic world: seeded, self-consistent relations, invented unique names, disjoint held-out parts."""

from __future__ import annotations

import random

import pytest

from tunewright.errors import ConfigError
from tunewright.lab.world import INDUSTRIES, SIZES, invent_word, make_world, partition


@pytest.fixture(scope="module")
def world():
    return make_world(0)


def test_same_seed_same_world_other_seed_other_world(world):
    assert make_world(0) == world
    other = make_world(1)
    assert [p.name for p in other.people] != [p.name for p in world.people]


def test_sizes_give_the_promised_counts(world):
    n = SIZES["small"]
    assert (len(world.countries), len(world.cities), len(world.orgs), len(world.people), len(world.products)) == (
        n["countries"], n["cities"], n["orgs"], n["people"], n["products"])
    assert len(make_world(0, "tiny").people) == SIZES["tiny"]["people"]


def test_unknown_size_suggests():
    with pytest.raises(ConfigError, match=r"unknown world size 'smal' \(did you mean \"small\"\?\)"):
        make_world(0, "smal")


def test_relations_point_at_existing_entities(world):
    for c in world.cities:
        assert c.country in world.countries and 800 <= c.founded <= 1950 and c.population > 0
    for o in world.orgs:
        assert world.city(o.city) and o.industry in INDUSTRIES
        ceo = world.person(o.ceo)
        assert ceo.employer == o.name and ceo.job == "chief executive"
    for p in world.people:
        org = world.org(p.employer)
        assert world.city(p.city) and 19 <= p.age <= 78 and 1 <= len(p.hobbies) <= 3
        assert p.job == "chief executive" or p.job in INDUSTRIES[org.industry][1]
    for p in world.products:
        maker = world.org(p.maker)
        assert p.category in INDUSTRIES[maker.industry][2] and 1.0 <= p.rating <= 5.0 and p.price > 0


def test_every_invented_word_names_one_entity(world):
    """A name's words are unique across the world, so a mention in text is unambiguous."""
    names = (world.countries + [c.name for c in world.cities] + [o.name.split()[0] for o in world.orgs]
             + [w for p in world.people for w in p.name.split()] + [p.name.split()[0] for p in world.products])
    assert len(names) == len(set(names))


def test_invented_words_avoid_real_words_and_silent_e():
    rng = random.Random(3)
    words = [invent_word(rng, 1).lower() for _ in range(3000)]
    assert not any(w.endswith("e") for w in words)
    assert not {"noun", "rain", "train", "star", "than"} & set(words)


def test_partition_is_disjoint_and_covers_everything(world):
    parts = partition(world)
    assert list(parts) == ["train", "validation", "test"]
    people = [p.name for part in parts.values() for p in part.people]
    products = [p.name for part in parts.values() for p in part.products]
    assert sorted(people) == sorted(p.name for p in world.people) and len(set(people)) == len(people)
    assert sorted(products) == sorted(p.name for p in world.products) and len(set(products)) == len(products)
    assert len(parts["train"].people) == 420 and len(parts["test"].people) == 90
    for part in parts.values():  # an organisation is "led" by a part exactly when its CEO is in it
        names = {p.name for p in part.people}
        assert {o.name for o in part.led_orgs} == {o.name for o in world.orgs if o.ceo in names}
    assert partition(world) == parts
