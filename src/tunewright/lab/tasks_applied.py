"""Applied tasks of the lab: preference pairs, recommendation and tabular rows.

    preferences     {prompt, chosen, rejected, rejected_kind}. Hidden rule: the chosen answer is correct
                    and concise; the rejected one is wrong, or right but padded with filler, or both
                    (rejected_kind: wrong | verbose | both; a length-only scorer gets wrong pairs right
                    half the time at best, so they measure whether a model learned correctness). A reward
                    model or DPO learns the rule from the pairs; the prompts are arithmetic problems
                    and questions with the paragraph that answers them, so correctness is checkable.
    recommendation  {user, domain, liked, disliked, candidate, label: Yes/No, prompt}. Users (the
                    world's people) love half the genres, alike in books and films; their
                    history mixes both domains (`domain=both`), so a model can carry taste across
                    domains, or keeps to one (`domain=books|films`: history and candidate of that
                    domain, for train-on-books, test-on-films). Items carry their genre in the
                    prompt, which makes the label learnable from the text.
    ratings         {user, item, domain, rating: 1-5, time}: each user rates 15-30 items one after
                    another (time: the day), from the same tastes; `tunewright data ratings` turns
                    such a file into Yes/No prompts with a time-ordered split.
    tabular         {area_m2, rooms, age_years, city, condition, garden, distance_km, target}: is the
                    house's price above the median? Price follows a log-linear rule plus noise.

Test rows are about people (users, question subjects) never seen in training; tabular and
arithmetic test rows never repeat a training row.
"""

from __future__ import annotations

import math
import random
import re

from tunewright.errors import ConfigError
from tunewright.lab.prose import article, person_paragraph, product_paragraph
from tunewright.lab.splits import Splits, draw_splits
from tunewright.lab.tasks_instruct import ARITHMETIC_OPS, PERSON_FACTS, PRODUCT_FACTS
from tunewright.lab.world import SPLITS, World, invent_word, make_world, partition
from tunewright.registry import suggest

__all__ = ["preferences", "follows_rule", "recommendation", "ratings", "tabular", "GENRES", "DOMAINS", "CONDITIONS", "TABULAR_FEATURES"]


# ---------------------------------------------------------------- preferences

_PADDING_BEFORE = ("Great question! Let me think about this carefully.", "Thanks for asking.",
                   "That is an interesting one, and I am happy to help.", "There are many ways to look at it.")
_PADDING_AFTER = ("I hope this helps, and let me know if you have any other questions!",
                  "Of course, you may want to double-check this yourself.",
                  "Please note that this may depend on several factors.", "Feel free to ask me anything else.")


def _verbose(answer: str, rng: random.Random) -> str:
    """`answer` wrapped in filler: what the hidden rule prefers less than the bare answer."""
    return f"{rng.choice(_PADDING_BEFORE)} The answer is {answer}. {rng.choice(_PADDING_AFTER)}"


def _arithmetic_prompt(world, part, rng):
    """(prompt, correct answer, a wrong answer) for a two-operand problem."""
    op = rng.choice(list(ARITHMETIC_OPS))
    a, b = rng.randint(0, 99), rng.randint(0, 12 if op == "*" else 99)
    right = ARITHMETIC_OPS[op](a, b)
    wrong = right + rng.choice([-10, -2, -1, 1, 2, 10])
    return f"What is {a} {'×' if op == '*' else op} {b}?", str(right), str(wrong)


def _question_prompt(world, part, rng):
    """(prompt, correct answer, a wrong answer or None): a paragraph and a question it answers; the
    wrong answer is the same fact of another entity (a plausible mistake)."""
    people = rng.random() < 0.6
    pool, facts, write = ((part.people, PERSON_FACTS, person_paragraph) if people
                          else (part.products, PRODUCT_FACTS, product_paragraph))
    e = rng.choice(pool)
    questions, answer = facts[rng.choice(list(facts))]
    right = answer(e, world)
    # Dozens of entities hold other values, so one turns up quickly; None if the pool agrees (tiny worlds).
    wrong = next((w for w in (answer(rng.choice(pool), world) for _ in range(100)) if w != right), None)
    prompt = f"{write(e, world, rng)}\n\nQuestion: {rng.choice(questions).format(n=e.name)}"
    return prompt, right, wrong


def preferences(seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 200, size: str = "small") -> Splits:
    """Pairs whose chosen answer is the bare correct answer; rejected: wrong (a third), correct but
    verbose (a third), or wrong and verbose (a third), named in `rejected_kind`."""
    world = make_world(seed, size)
    parts = partition(world)

    def make(split, rng):
        write = _arithmetic_prompt if rng.random() < 0.4 else _question_prompt
        prompt, right, wrong = write(world, parts[split], rng)
        # the same draws as before rejected_kind was recorded: exports of a seed keep their text
        kinds = ([("wrong", wrong), ("verbose", _verbose(right, rng)), ("both", _verbose(wrong, rng))] if wrong
                 else [("verbose", _verbose(right, rng))])
        kind, rejected = rng.choice(kinds)
        return prompt, {"prompt": prompt, "chosen": right, "rejected": rejected, "rejected_kind": kind}

    return draw_splits("preferences", seed, dict(train=n_train, validation=n_val, test=n_test), make)


def follows_rule(reply: str, answer: str) -> tuple[bool, bool]:
    """(correct, concise) of a reply to a preference prompt, by the task's hidden rule, without a
    model: correct when the right answer (the row's `chosen`) appears as a whole word (so "123" is not
    found in "1234" or "12.3"), concise when the reply is at most 4 words longer than that answer (the
    filler `_verbose` adds is 15 words or more). A reply follows the rule when both hold."""
    correct = re.search(rf"(?<![\w.-]){re.escape(answer)}(?![\w]|\.\d)", reply) is not None
    return correct, len(reply.split()) <= len(answer.split()) + 4


# ---------------------------------------------------------------- recommendation

GENRES = ("mystery", "romance", "science fiction", "fantasy", "comedy", "history", "horror", "adventure")
_DOMAINS = {"books": "book", "films": "film"}
_TITLE_NOUNS = ("Garden", "Letters", "Mirror", "Road", "Winter", "Secret", "River", "Crown", "Tower", "Storm",
                "Island", "Promise", "Shadow", "Harbour", "Clock", "Voyage")


def _catalog(seed: int, per_domain: int) -> dict[str, list[tuple[str, str, float]]]:
    """{domain: [(title, genre, quality)]}: invented titles, each of one genre, quality ~ N(0, 0.5)."""
    rng = random.Random(f"catalog:{seed}")
    titles: set[str] = set()
    out = {}
    for domain in _DOMAINS:
        items = []
        while len(items) < per_domain:
            title = f"The {invent_word(rng, rng.randint(2, 3))} {rng.choice(_TITLE_NOUNS)}"
            if title not in titles:
                titles.add(title)
                items.append((title, GENRES[len(items) % len(GENRES)], rng.gauss(0, 0.5)))
        out[domain] = items
    return out


def _taste(seed: int, user: str) -> dict[str, dict[str, float]]:
    """{domain: {genre: affinity}}: the user loves half the genres (+1.5) and dislikes the rest (-1.5),
    give or take N(0, 0.5); films shift each affinity by N(0, 0.3) from books."""
    rng = random.Random(f"taste:{seed}:{user}")
    loved = set(rng.sample(GENRES, len(GENRES) // 2))
    base = {g: (1.5 if g in loved else -1.5) + rng.gauss(0, 0.5) for g in GENRES}
    return {"books": base, "films": {g: v + rng.gauss(0, 0.3) for g, v in base.items()}}


def _likes(taste, domain, item, rng) -> bool:
    """Whether the user likes the item: P = sigmoid(2 * (affinity + quality)), mostly near 0 or 1."""
    _, genre, quality = item
    return rng.random() < 1 / (1 + math.exp(-2 * (taste[domain][genre] + quality)))


def _described(domain: str, item) -> str:
    return f"{item[0]} ({article(item[1])} {_DOMAINS[domain]})"


DOMAINS = ("both", *_DOMAINS)  # the `domain` option: where histories and candidates come from


def _domains(task: str, domain: str) -> list[str]:
    if domain not in DOMAINS:
        raise ConfigError(f"lab task {task}: domain: unknown {domain!r}{suggest(domain, DOMAINS)}; known: {', '.join(DOMAINS)}")
    return list(_DOMAINS) if domain == "both" else [domain]


def recommendation(seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 200, size: str = "small",
                   items_per_domain: int = 120, history: tuple[int, int] = (4, 8), domain: str = "both") -> Splits:
    """A user's rated history (between `history` items, from `domain`: both, books or films) and a
    candidate item of `domain`."""
    domains = _domains("recommendation", domain)
    world = make_world(seed, size)
    parts = partition(world)
    catalog = _catalog(seed, items_per_domain)

    def make(split, rng):
        user = rng.choice(parts[split].people).name
        taste = _taste(seed, user)
        seen = []
        while len(seen) < rng.randint(*history):
            domain = rng.choice(domains)
            item = (domain, rng.choice(catalog[domain]))
            if item not in seen:
                seen.append(item)
        domain = rng.choice(domains)
        candidate = rng.choice([i for i in catalog[domain] if (domain, i) not in seen])
        liked = [(d, i) for d, i in seen if _likes(taste, d, i, rng)]
        disliked = [(d, i) for d, i in seen if (d, i) not in liked]
        label = "Yes" if _likes(taste, domain, candidate, rng) else "No"
        lists = {name: ", ".join(_described(d, i) for d, i in group) or "nothing"
                 for name, group in (("liked", liked), ("disliked", disliked))}
        prompt = (f"The user liked {lists['liked']}. The user disliked {lists['disliked']}. "
                  f"Will the user like {_described(domain, candidate)}? Answer Yes or No.")
        row = {"user": user, "domain": domain, "liked": [i[0] for _, i in liked],
               "disliked": [i[0] for _, i in disliked], "candidate": candidate[0], "label": label, "prompt": prompt}
        return prompt, row

    return draw_splits("recommendation", seed, dict(train=n_train, validation=n_val, test=n_test), make)


def _stars(taste, domain, item, rng) -> int:
    """1-5 stars: 3 + affinity + quality + N(0, 0.5), rounded and clipped (liked genres get 4-5)."""
    _, genre, quality = item
    return max(1, min(5, round(3 + taste[domain][genre] + quality + rng.gauss(0, 0.5))))


def ratings(seed: int = 0, n_train: int = 3000, n_val: int = 300, n_test: int = 600, size: str = "small",
            items_per_domain: int = 120, per_user: tuple[int, int] = (15, 30), domain: str = "both") -> Splits:
    """Rating histories: each of a split's users (never in another split) rates `per_user` distinct
    items of `domain` in time order, until the split holds its rows (the last user's history is cut)."""
    domains = _domains("ratings", domain)
    world = make_world(seed, size)
    parts = partition(world)
    catalog = _catalog(seed, items_per_domain)
    out: Splits = {}
    for split, n in zip(SPLITS, (n_train, n_val, n_test)):
        rng = random.Random(f"ratings:{seed}:{split}")
        people = [p.name for p in parts[split].people]
        rng.shuffle(people)
        rows: list[dict] = []
        for user in people:
            if len(rows) >= n:
                break
            taste, day = _taste(seed, user), rng.randint(0, 30)
            pool = [(d, item) for d in domains for item in catalog[d]]
            for d, item in rng.sample(pool, min(len(pool), rng.randint(*per_user))):
                day += rng.randint(1, 5)
                rows.append({"user": user, "item": _described(d, item), "domain": d,
                             "rating": _stars(taste, d, item, rng), "time": day})
        if len(rows) < n:
            raise ConfigError(f"lab task ratings: n_{'val' if split == 'validation' else split}: the split's "
                              f"{len(people)} people rate {len(rows)} items, fewer than the {n} asked; ask for fewer "
                              f"or use a larger world (size=large)")
        out[split] = rows[:n]
    return out


# ---------------------------------------------------------------- tabular

CONDITIONS = {"poor": -0.25, "fair": -0.08, "good": 0.05, "excellent": 0.2}  # effect on log price
TABULAR_FEATURES = ("area_m2", "rooms", "age_years", "city", "condition", "garden", "distance_km")


def _house(world: World, levels: dict[str, float], rng: random.Random) -> tuple[dict, float]:
    """(features, log price). log price = 0.9 log(area) + city level + condition + 0.1 garden
    - 0.03 distance - 0.002 age + 0.03 rooms + N(0, 0.2)."""
    area = round(rng.lognormvariate(4.4, 0.4))
    rooms = max(1, min(8, round(area / 30 + rng.gauss(0, 0.7))))
    age = rng.randint(0, 120)
    city = rng.choice(world.cities).name
    condition = rng.choice(list(CONDITIONS))
    garden = rng.random() < 0.4
    distance = round(rng.uniform(0.5, 30), 1)
    log_price = (0.9 * math.log(area) + levels[city] + CONDITIONS[condition] + 0.1 * garden - 0.03 * distance
                 - 0.002 * age + 0.03 * rooms + rng.gauss(0, 0.2))
    features = dict(area_m2=area, rooms=rooms, age_years=age, city=city, condition=condition,
                    garden="yes" if garden else "no", distance_km=distance)
    return features, log_price


def tabular(seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 400, size: str = "small") -> Splits:
    """House rows; target "Yes" when the price is above the median of the world's houses."""
    world = make_world(seed, size)
    rng = random.Random(f"tabular-cities:{seed}")
    levels = {c.name: rng.gauss(0, 0.3) for c in world.cities}  # some cities are dearer
    reference = sorted(_house(world, levels, rng)[1] for _ in range(4001))
    median = reference[len(reference) // 2]  # one threshold for every split, from a fixed sample

    def make(split, rng):
        features, log_price = _house(world, levels, rng)
        return tuple(features.values()), {**features, "target": "Yes" if log_price > median else "No"}

    return draw_splits("tabular", seed, dict(train=n_train, validation=n_val, test=n_test), make)
