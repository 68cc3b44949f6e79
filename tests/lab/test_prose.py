"""Prose about the world: paragraphs state the entity's facts; dialogues carry a consistent summary."""

from __future__ import annotations

import random

from tunewright.lab.prose import (article, city_paragraph, dialogue, join_words, org_paragraph, person_paragraph,
                                  product_paragraph)
from tunewright.lab.world import make_world


def test_join_words_and_article():
    assert join_words(["chess"]) == "chess"
    assert join_words(["chess", "sailing", "pottery"]) == "chess, sailing and pottery"
    assert (article("engineer"), article("baker")) == ("an engineer", "a baker")


def test_paragraphs_state_every_fact():
    world, rng = make_world(0), random.Random(0)
    for p in world.people[:50]:
        text = person_paragraph(p, world, rng)
        for fact in (p.name, str(p.age), p.city, world.city(p.city).country, p.job, p.employer, join_words(p.hobbies)):
            assert fact in text
    for p in world.products[:30]:
        text = product_paragraph(p, world, rng)
        assert all(f in text for f in (p.name, p.maker, p.category, f"{p.price:.2f}", f"{p.rating} out of 5"))
    for o in world.orgs[:20]:
        assert o.ceo in org_paragraph(o, world, rng) and o.ceo not in org_paragraph(o, world, rng, with_ceo=False)
    c = world.cities[0]
    assert all(f in city_paragraph(c, world, rng) for f in (c.name, c.country, str(c.founded), f"{c.population:,}"))


def test_wording_varies_but_is_seeded():
    world = make_world(0)
    p = world.people[0]
    texts = {person_paragraph(p, world, random.Random(i)) for i in range(20)}
    assert len(texts) > 5
    assert person_paragraph(p, world, random.Random(7)) == person_paragraph(p, world, random.Random(7))


def test_dialogues_cover_every_scenario():
    world, rng = make_world(0), random.Random(1)
    a, b = world.people[:2]
    summaries = [dialogue(a, b, world, world.products[:5], rng).summary for _ in range(80)]
    for marker in (" agree to meet ", " invites ", " about leaving ", " bought the "):
        assert any(marker in s for s in summaries)
    assert not any(" bought the " in dialogue(a, b, world, [], rng).summary for _ in range(40))
