"""Retrieval pairs of the lab, rows {anchor, positive, negative} (format `pairs`, the contrastive
objective's): a question about a person or product of the world, the encyclopedia paragraph about
that entity, and as hard negative the paragraph about a *similar* entity (a person with the same
job, else in the same city; a product of the same category, else of the same maker), which shares
most words with the right one.

The question describes the entity instead of naming it ("Who is the 47-year-old nurse living in
Thouora?", "Which app made by Lezinol Systems costs 12.70 crowns?"): a name would make retrieval a
string match that any encoder solves before training. Two or three facts single it out; the hard
negative shares one of them, so the encoder must weigh the facts that differ.

Each entity has one paragraph (drawn once per entity, seeded by its name), so two questions about
one entity share their positive text exactly: retrieval metrics count the paragraph, not its
phrasing. Test and validation rows are about people and products no training row mentions
(`world.partition`), their negatives too: Recall@k on them measures what transfers to unseen
entities, not recall of the training paragraphs.
"""

from __future__ import annotations

import random

from tunewright.lab.prose import CURRENCY, article, person_paragraph, product_paragraph
from tunewright.lab.splits import Splits, draw_splits
from tunewright.lab.world import make_world, partition

# questions that describe a person or a product by two or three of its facts, never by name
PERSON_QUESTIONS = (
    lambda p, w: f"Who is the {p.age}-year-old {p.job} living in {p.city}?",
    lambda p, w: f"Which {p.job} from {p.city} enjoys {p.hobbies[0]}?",
    lambda p, w: f"Who works for {p.employer} as {article(p.job)} and is {p.age} years old?",
    lambda p, w: f"Which person in {w.city(p.city).country} is {article(p.job)} aged {p.age}?",
)
PRODUCT_QUESTIONS = (
    lambda p, w: f"Which {p.category} made by {p.maker} costs {p.price:.2f} {CURRENCY}?",
    lambda p, w: f"What {p.category} is rated {p.rating} out of 5 and sold for {p.price:.2f} {CURRENCY}?",
    lambda p, w: f"Which product from {p.maker} has a rating of {p.rating}?",
)

__all__ = ["retrieval", "PERSON_QUESTIONS", "PRODUCT_QUESTIONS"]


def _similar(items: list, e, keys: tuple[str, ...], rng: random.Random):
    """Another item of `items` sharing the first of `keys` it can (else any other item)."""
    for key in keys:
        alike = [x for x in items if x is not e and getattr(x, key) == getattr(e, key)]
        if alike:
            return rng.choice(alike)
    return rng.choice([x for x in items if x is not e])


def retrieval(seed: int = 0, n_train: int = 1000, n_val: int = 100, n_test: int = 200, size: str = "small") -> Splits:
    """Question -> the paragraph about the entity it names, with a similar entity's paragraph as hard
    negative; splits about disjoint entities."""
    world = make_world(seed, size)
    parts = partition(world)
    paragraphs: dict[str, str] = {}

    def paragraph(e, write) -> str:
        if e.name not in paragraphs:
            paragraphs[e.name] = write(e, world, random.Random(f"retrieval:{seed}:{e.name}"))
        return paragraphs[e.name]

    def make(split, rng):
        part = parts[split]
        if rng.random() < 0.65:
            e = rng.choice(part.people)
            ask = rng.choice(PERSON_QUESTIONS)
            other, write = _similar(part.people, e, ("job", "city"), rng), person_paragraph
        else:
            e = rng.choice(part.products)
            ask = rng.choice(PRODUCT_QUESTIONS)
            other, write = _similar(part.products, e, ("category", "maker"), rng), product_paragraph
        question = ask(e, world)
        return question, {"anchor": question, "positive": paragraph(e, write), "negative": paragraph(other, write)}

    return draw_splits("retrieval", seed, dict(train=n_train, validation=n_val, test=n_test), make)
