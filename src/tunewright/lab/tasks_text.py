"""Raw text of the synthetic world for continued pretraining, rows {text}: encyclopedia paragraphs
(people, products, organisations, cities), dialogues, product reviews and news items.

With `holdout=True` (the default) the validation and test documents are about people and products
that no training document mentions, so their perplexity measures generalisation to the world's
style rather than recall. With `holdout=False` every split draws from the whole world (distinct
documents, shared facts): train on it, then ask closed-book questions (`world_qa(context=False)`)
about the held-out people to measure knowledge injected by continued pretraining.
"""

from __future__ import annotations

from tunewright.lab.prose import city_paragraph, dialogue, org_paragraph, person_paragraph, product_paragraph
from tunewright.lab.splits import Splits, draw_splits
from tunewright.lab.tasks_classify import SENTIMENT_LABELS, TOPIC_LABELS, news, review
from tunewright.lab.world import SPLITS, Part, make_world, partition

__all__ = ["pretraining_text", "DOCUMENT_KINDS"]

# kind -> share of documents
DOCUMENT_KINDS = {"person": 4, "product": 2, "organisation": 1, "city": 1, "dialogue": 2, "review": 2, "news": 2}


def _organisation(world, part, rng, train):
    # Training text may describe any organisation; a CEO is named only in the CEO's own split.
    org = rng.choice(world.orgs if train else part.led_orgs)
    return org_paragraph(org, world, rng, with_ceo=org in part.led_orgs)


def _dialogue(world, part, rng, train):
    a, b = rng.sample(part.people, 2)
    return dialogue(a, b, world, part.products, rng).text


# kind -> (world, part, rng, train split?) -> one document
_WRITERS = {
    "person": lambda world, part, rng, train: person_paragraph(rng.choice(part.people), world, rng),
    "product": lambda world, part, rng, train: product_paragraph(rng.choice(part.products), world, rng),
    "organisation": _organisation,
    "city": lambda world, part, rng, train: city_paragraph(rng.choice(world.cities), world, rng),
    "dialogue": _dialogue,
    "review": lambda world, part, rng, train: review(rng.choice(part.products), rng.choice(SENTIMENT_LABELS), rng),
    "news": lambda world, part, rng, train: news(rng.choice(TOPIC_LABELS), world, part, rng),
}


def pretraining_text(seed: int = 0, n_train: int = 3000, n_val: int = 200, n_test: int = 200, size: str = "small",
                     holdout: bool = True) -> Splits:
    """Documents about the world, one a row, of the kinds in DOCUMENT_KINDS. With `holdout`, city
    paragraphs (cities are shared by all splits) appear only in training, and held-out organisation
    paragraphs only about organisations led by one of the split's own people."""
    world = make_world(seed, size)
    parts = partition(world) if holdout else {
        s: Part(split=s, people=world.people, products=world.products, led_orgs=world.orgs) for s in SPLITS}

    def make(split, rng):
        part, train = parts[split], split == "train" or not holdout
        kinds = dict(DOCUMENT_KINDS)
        if not train:  # shared entities would make held-out text partly seen
            kinds.pop("city")
            if not part.led_orgs:
                kinds.pop("organisation")
        kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
        text = _WRITERS[kind](world, part, rng, train)
        return text, {"text": text}

    return draw_splits("pretraining_text", seed, dict(train=n_train, validation=n_val, test=n_test), make)
