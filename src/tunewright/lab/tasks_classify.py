"""Text classification tasks of the lab, rows {text, label}: learnable, but not by keyword matching.

    sentiment   IMDb-like product reviews, labels positive / negative
    topic       AG-News-like news items (headline + sentence), labels world / sports / business / science

Why a bag-of-words model cannot reach 100% (a test keeps its test accuracy between 70% and 95%):
neutral sentences carry no label; negation flips a cue word ("not bad" is praise, "not great" is
not); mixed reviews hold one sentence of the other polarity; news stories cross topics (a football
club's sale is business, a rocket launch is science, a product launch business) and share words
("record", "team", "deal"); and a fixed share of labels is flipped (`noise`), as in real
crowd-labelled data. The texts mention the split's own people and products (held out from training).
"""

from __future__ import annotations

import random

from tunewright.errors import ConfigError
from tunewright.lab.prose import CURRENCY, DAYS
from tunewright.lab.splits import Splits, draw_splits
from tunewright.lab.world import Part, World, make_world, partition
from tunewright.registry import suggest

__all__ = ["sentiment", "topic", "review", "news", "SENTIMENT_LABELS", "TOPIC_LABELS"]

SENTIMENT_LABELS = ("positive", "negative")
TOPIC_LABELS = ("world", "sports", "business", "science")


# ---------------------------------------------------------------- reviews

_ASPECTS = ("build quality", "design", "price", "battery", "finish", "packaging", "manual", "customer service",
            "size", "weight", "sound", "colour")
_GOOD = ("great", "excellent", "superb", "solid", "lovely", "impressive", "fantastic", "reliable", "good")
_BAD = ("awful", "poor", "flimsy", "disappointing", "terrible", "cheap", "bad", "annoying", "useless")
_VERDICTS = {
    "positive": ("Overall I would recommend it.", "Five stars from me.", "I would buy it again.",
                 "Worth every crown.", "Highly recommended."),
    "negative": ("Overall I would not recommend it.", "One star from me.", "I am returning it.",
                 "A waste of money.", "Avoid it."),
}
_NEUTRAL = ("I bought the {p} last {d}.", "It came in a plain box.", "My sister uses hers every day.",
            "I read about the {p} on a forum.", "It is made by {m}.", "It cost {price} {cur}.",
            "I have had it for about a month.", "It is my second {c}.", "Delivery took three days.",
            "I use it mostly at weekends.")


def _aspect_sentence(polarity: str, rng: random.Random) -> str:
    """A sentence judging one aspect; a third of them say it by negating the opposite word."""
    aspect = rng.choice(_ASPECTS)
    same, opposite = (_GOOD, _BAD) if polarity == "positive" else (_BAD, _GOOD)
    if rng.random() < 0.33:
        return rng.choice([f"The {aspect} is not {rng.choice(opposite)} at all.",
                           f"Honestly, the {aspect} is not {rng.choice(opposite)}.",
                           f"I would not call the {aspect} {rng.choice(opposite)}."])
    return rng.choice([f"The {aspect} is {rng.choice(same)}.", f"Really {rng.choice(same)} {aspect}.",
                       f"I found the {aspect} {rng.choice(same)}."])


def review(product, label: str, rng: random.Random) -> str:
    """A 3-6 sentence review of `product` whose overall opinion is `label` (positive/negative).

    Half the reviews are mixed (one sentence of the other polarity); some have no verdict sentence.
    """
    other = "negative" if label == "positive" else "positive"
    sentences = [_aspect_sentence(label, rng) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.5:
        sentences.append(_aspect_sentence(other, rng))
    fill = {"p": product.name, "d": rng.choice(DAYS), "m": product.maker, "price": f"{product.price:.2f}",
            "cur": CURRENCY, "c": product.category}
    sentences += [s.format(**fill) for s in rng.sample(_NEUTRAL, rng.randint(1, 3))]
    rng.shuffle(sentences)
    if rng.random() < 0.7:
        sentences.append(rng.choice(_VERDICTS[label]))
    return " ".join(sentences)


def sentiment(seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 400, size: str = "small",
              noise: float = 0.07) -> Splits:
    """Reviews of the split's products, balanced labels, a share `noise` of labels flipped."""
    world = make_world(seed, size)
    parts = partition(world)

    def make(split, rng):
        label = rng.choice(SENTIMENT_LABELS)
        text = review(rng.choice(parts[split].products), label, rng)
        if rng.random() < noise:
            label = "negative" if label == "positive" else "positive"
        return text, {"text": text, "label": label}

    return draw_splits("sentiment", seed, dict(train=n_train, validation=n_val, test=n_test), make)


# ---------------------------------------------------------------- news

# Headlines per topic. Slots: {person} {org} {city} {city2} {country} {country2} {product} {n}.
_HEADLINES = {
    "world": ("{country} and {country2} sign a border treaty", "Floods force thousands from their homes in {city}",
              "Protesters gather in {city} ahead of the vote", "{country} holds snap election after minister resigns",
              "Talks between {country} and {country2} end without a deal", "Storm damage closes roads across {country}",
              "{person} named foreign minister of {country}", "Aid convoy reaches {city} after week-long delay"),
    "sports": ("{city} Rovers beat {city2} United {n}-1", "{person} wins the {city} marathon in record time",
               "{city2} United sign striker in record deal", "{person} reaches the final of the {country} Open",
               "Injury rules {person} out of the season", "{city} team clinches the league title",
               "{person} breaks the national swimming record", "Coach of {city} Rovers resigns after defeat"),
    "business": ("{org} reports record profits", "{org} shares fall {n} percent after weak sales",
                 "{org} agrees deal to buy rival", "{org} launches the {product} at {price} crowns",
                 "{person} to step down as head of {org}", "{city2} United sold to {org} investors",
                 "Markets in {country} rise as rates hold", "{org} cuts {n}00 jobs in {city}"),
    "science": ("Researchers at {org} discover a new species of frog", "{country} space agency launches lunar probe",
                "Team led by {person} maps an ancient river under {city}",
                "New battery design stores {n} times more energy",
                "Study finds coffee drinkers sleep less", "Telescope spots comet heading past {country}",
                "{person} wins award for work on vaccines", "Rocket launch from {city} marks a record year"),
}
_TOPIC_WORDS = {  # a second sentence in the topic's own words (stories still share some of them)
    "world": ("Government officials said the situation remained tense.", "The minister promised help for the region.",
              "Diplomats expect further talks next month.", "Voters are divided over the new policy."),
    "sports": ("Fans celebrated late into the night.", "The team plays its next match on {day}.",
               "The coach praised the players' effort.", "It was the club's best season in a decade."),
    "business": ("Analysts expect the company's revenue to grow.", "Investors welcomed the news.",
                 "The company said costs had risen sharply.", "Shareholders will vote on the plan in {day}'s meeting."),
    "science": ("The findings appear in a journal this week.", "Scientists say more experiments are needed.",
                "The research team used data from a new satellite.", "The study followed volunteers for two years."),
}
# Headlines any topic may carry: the story's topic then shows only in its body, if there is one.
_SHARED_HEADLINES = ("{person} speaks to reporters in {city}", "Record crowds expected in {city} this weekend",
                     "{org} backs new deal in {country}", "Big week ahead for {city}",
                     "{person} returns to {city} after a long absence", "Questions remain after {day}'s announcement",
                     "Team from {city} heads to {country2}")
_NEWS_FILLER = ("The news was confirmed on {day}.", "More details are expected later this week.",
                "Officials in {city} declined to comment.", "Local papers in {city} reported the story first.",
                "It was a record week for {city}.", "The deal surprised many observers.")


def news(label: str, world: World, part: Part, rng: random.Random) -> str:
    """A headline and one or two sentences on `label`'s topic, naming the part's people and products."""
    c1, c2 = rng.sample(world.cities, 2)
    product = rng.choice(part.products) if part.products else None
    fill = {"person": rng.choice(part.people).name, "org": rng.choice(world.orgs).name, "city": c1.name,
            "city2": c2.name, "country": c1.country, "country2": c2.country, "n": rng.randint(2, 9),
            "product": product.name if product else "new model", "price": f"{product.price:.0f}" if product else "99",
            "day": rng.choice(DAYS)}
    headline = rng.choice(_SHARED_HEADLINES if rng.random() < 0.25 else _HEADLINES[label]).format(**fill)
    body = []
    if rng.random() < 0.7:
        body.append(rng.choice(_TOPIC_WORDS[label]).format(**fill))
    if rng.random() < 0.6:
        body.append(rng.choice(_NEWS_FILLER).format(**fill))
    return " ".join([headline + ".", *body])


def topic(seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 400, size: str = "small",
          noise: float = 0.07, labels: list[str] | None = None) -> Splits:
    """News items on four topics, balanced labels, a share `noise` of labels replaced at random.
    `labels`: only these topics (e.g. [sports, science]: two of the four, the course's second task
    in a sequence after sentiment); noise then swaps among them."""
    chosen = tuple(labels) if labels is not None else TOPIC_LABELS
    unknown = [label for label in chosen if label not in TOPIC_LABELS]
    if unknown or len(set(chosen)) < 2 or len(set(chosen)) != len(chosen):
        raise ConfigError(f"lab task topic: labels {list(chosen)}: give two or more different topics of "
                          f"{', '.join(TOPIC_LABELS)}" + (f" ({unknown[0]!r}{suggest(unknown[0], TOPIC_LABELS)} is "
                                                          f"not one)" if unknown else ""))
    world = make_world(seed, size)
    parts = partition(world)

    def make(split, rng):
        label = rng.choice(chosen)
        text = news(label, world, parts[split], rng)
        if rng.random() < noise:
            label = rng.choice([t for t in chosen if t != label])
        return text, {"text": text, "label": label}

    return draw_splits("topic", seed, dict(train=n_train, validation=n_val, test=n_test), make)

