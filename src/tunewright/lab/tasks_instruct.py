"""Instruction tasks of the lab, as alpaca rows {instruction, input, output} or, with
`fmt="messages"`, as {messages: [user, assistant]}. Every output is short and exact-match checkable.

    world_qa          a question about a person, product or organisation (with the paragraph that
                      answers it as input, or closed-book with context=False)
    arithmetic        "What is 37 + 58?" -> "95"
    string_skills     reverse, count a letter, uppercase, length, last letter, spell, sort letters
    dialogue_summary  a short invented dialogue -> the one sentence that sums it up
    extraction        a sentence about a person -> {"name":...,"age":...,"city":...,"job":...}

Test rows are about people, products and words never used in training (see `world.partition`),
and arithmetic test problems never appear in training.
"""

from __future__ import annotations

import json
import random

from tunewright.errors import ConfigError
from tunewright.lab.prose import (CURRENCY, article, dialogue, join_words, org_paragraph, person_paragraph,
                                  product_paragraph)
from tunewright.lab.splits import Splits, check_fmt, draw_splits, input_key, instruct_row
from tunewright.lab.world import SPLITS, invent_word, make_world, partition
from tunewright.registry import suggest

__all__ = ["world_qa", "arithmetic", "string_skills", "dialogue_summary", "extraction", "EXTRACTION_KEYS",
           "PERSON_FACTS", "PRODUCT_FACTS", "ARITHMETIC_OPS"]

EXTRACTION_KEYS = ("name", "age", "city", "job")


# ---------------------------------------------------------------- world_qa

# (question templates, answer) per fact; each question names the entity with {n}.
PERSON_FACTS = {
    "age": (("How old is {n}?", "What is the age of {n}?"), lambda p, w: str(p.age)),
    "city": (("Which city does {n} live in?", "Where does {n} live?"), lambda p, w: p.city),
    "country": (("In which country does {n} live?",), lambda p, w: w.city(p.city).country),
    "job": (("What is {n}'s job?", "What does {n} do for a living?"), lambda p, w: p.job),
    "employer": (("Which organisation does {n} work for?", "Who employs {n}?"), lambda p, w: p.employer),
    "hobbies": (("What are {n}'s hobbies?",), lambda p, w: join_words(p.hobbies)),
}
PRODUCT_FACTS = {
    "maker": (("Who makes the {n}?", "Which company makes the {n}?"), lambda p, w: p.maker),
    "price": (("How much does the {n} cost?",), lambda p, w: f"{p.price:.2f} {CURRENCY}"),
    "category": (("What kind of product is the {n}?",), lambda p, w: p.category),
    "rating": (("How is the {n} rated?",), lambda p, w: f"{p.rating} out of 5"),
}


def world_qa(seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 200, fmt: str = "alpaca",
             size: str = "small", context: bool = True) -> Splits:
    """Questions about the split's people, products and organisation leaders, answered in a few words.

    `context=True`: the input holds the paragraph that answers the question, sometimes with a second
    paragraph about another entity before or after it (reading comprehension; learnable on held-out
    entities). `context=False`: closed-book (the answer must come from continued pretraining on the
    world's text, e.g. `pretraining_text(holdout=False)`).
    """
    check_fmt("world_qa", fmt)
    world = make_world(seed, size)
    parts = partition(world)

    def make(split, rng):
        part = parts[split]
        kind = rng.choices(("person", "product", "ceo"), weights=(6, 3, 1 if part.led_orgs else 0))[0]
        if kind == "person":
            e = rng.choice(part.people)
            questions, answer = PERSON_FACTS[rng.choice(list(PERSON_FACTS))]
            text = person_paragraph(e, world, rng)
            other = person_paragraph(_other(part.people, e, rng), world, rng)
        elif kind == "product":
            e = rng.choice(part.products)
            questions, answer = PRODUCT_FACTS[rng.choice(list(PRODUCT_FACTS))]
            text = product_paragraph(e, world, rng)
            other = product_paragraph(_other(part.products, e, rng), world, rng)
        else:
            e = rng.choice(part.led_orgs)
            questions, answer = ("Who is the chief executive of {n}?", "Who leads {n}?"), lambda o, w: o.ceo
            text = org_paragraph(e, world, rng)
            other = org_paragraph(_other(part.led_orgs, e, rng), world, rng) if len(part.led_orgs) > 1 else ""
        question = rng.choice(questions).format(n=e.name)
        if not context:
            text = ""
        elif other and rng.random() < 0.5:  # a distractor: the model must find the right paragraph
            text = "\n\n".join([text, other] if rng.random() < 0.5 else [other, text])
        row = instruct_row(question, text, answer(e, world), fmt)
        return input_key(row), row

    return draw_splits("world_qa", seed, dict(train=n_train, validation=n_val, test=n_test), make)


def _other(items: list, e, rng: random.Random):
    """An item of `items` other than `e` (items holds at least two)."""
    while True:
        x = rng.choice(items)
        if x is not e:
            return x


# ---------------------------------------------------------------- arithmetic

ARITHMETIC_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_OP_WORDS = {"+": ("+", "plus"), "-": ("-", "minus"), "*": ("×", "times")}


def arithmetic(seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 200, fmt: str = "alpaca",
               max_value: int = 99, ops: str = "+-*") -> Splits:
    """Two-operand problems on integers 0..max_value (a multiplication's second operand at most 12),
    answered with the bare integer; subtraction may go negative. Problems are unique across splits."""
    check_fmt("arithmetic", fmt)
    bad = sorted(set(ops) - set(ARITHMETIC_OPS))
    if bad or not ops:
        raise ConfigError(f"lab task arithmetic: ops: expected some of {''.join(ARITHMETIC_OPS)!r}, got {ops!r}")
    if not isinstance(max_value, int) or max_value < 2:
        raise ConfigError(f"lab task arithmetic: max_value: expected an integer >= 2, got {max_value!r}")
    op_list = sorted(set(ops))

    def make(split, rng):
        op = rng.choice(op_list)
        a = rng.randint(0, max_value)
        b = rng.randint(0, min(12, max_value) if op == "*" else max_value)
        symbol, word = _OP_WORDS[op]
        question = rng.choice([f"What is {a} {symbol} {b}?", f"Compute {a} {word} {b}.",
                               f"Calculate {a} {symbol} {b}."])
        return (a, op, b), instruct_row(question, "", str(ARITHMETIC_OPS[op](a, b)), fmt)

    return draw_splits("arithmetic", seed, dict(train=n_train, validation=n_val, test=n_test), make)


# ---------------------------------------------------------------- string_skills

# skill -> (instruction, answer); `w` is the word, `c` a letter (used by "count" only).
_SKILLS = {
    "reverse": (lambda c: "Reverse the letters of the word.", lambda w, c: w[::-1]),
    "count": (lambda c: f'How many times does the letter "{c}" appear in the word?', lambda w, c: str(w.count(c))),
    "uppercase": (lambda c: "Write the word in capital letters.", lambda w, c: w.upper()),
    "length": (lambda c: "How many letters does the word have?", lambda w, c: str(len(w))),
    "last": (lambda c: "What is the last letter of the word?", lambda w, c: w[-1]),
    "spell": (lambda c: "Spell the word with hyphens between its letters.", lambda w, c: "-".join(w)),
    "sort": (lambda c: "Write the letters of the word in alphabetical order.", lambda w, c: "".join(sorted(w))),
}


def string_skills(seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 200,
                  fmt: str = "alpaca", skills: tuple[str, ...] = tuple(_SKILLS)) -> Splits:
    """A skill applied to an invented lowercase word (the input); test words never occur in training."""
    check_fmt("string_skills", fmt)
    for s in skills:
        if s not in _SKILLS:
            raise ConfigError(f"lab task string_skills: skills: unknown skill {s!r}{suggest(s, _SKILLS)}; "
                              f"known: {', '.join(_SKILLS)}")
    rng = random.Random(f"words:{seed}")
    words = sorted({invent_word(rng, rng.randint(1, 3)).lower() for _ in range(4000)})
    rng.shuffle(words)
    cut = len(words) * 7 // 10, len(words) * 85 // 100
    pools = dict(zip(SPLITS, (words[:cut[0]], words[cut[0]:cut[1]], words[cut[1]:])))

    def make(split, rng):
        word, skill = rng.choice(pools[split]), rng.choice(list(skills))
        # Mostly a letter of the word, sometimes one it lacks (answer 0).
        letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        instruction, answer = _SKILLS[skill]
        letter = letter if skill == "count" else ""
        return (skill, word, letter), instruct_row(instruction(letter), word, answer(word, letter), fmt)

    return draw_splits("string_skills", seed, dict(train=n_train, validation=n_val, test=n_test), make)


# ---------------------------------------------------------------- dialogue_summary

def dialogue_summary(seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 200,
                     fmt: str = "alpaca", size: str = "small") -> Splits:
    """A 4-5 line dialogue between two people of the split -> its one-sentence summary."""
    check_fmt("dialogue_summary", fmt)
    world = make_world(seed, size)
    parts = partition(world)

    def make(split, rng):
        part = parts[split]
        a, b = rng.sample(part.people, 2)
        d = dialogue(a, b, world, part.products, rng)
        return d.text, instruct_row("Summarize the dialogue in one sentence.", d.text, d.summary, fmt)

    return draw_splits("dialogue_summary", seed, dict(train=n_train, validation=n_val, test=n_test), make)


# ---------------------------------------------------------------- extraction

_EXTRACTION_SENTENCES = (
    "{name}, {a_age_job} from {city}, {extra}.",
    "Meet {name}: {age} years old, lives in {city} and works as {a_job}.",
    "{name} ({age}) works as {a_job} in {city}; {extra}.",
    "At {age}, {name} has been {a_job} in {city} for years, and {extra}.",
    "The {job} {name}, who is {age}, moved to {city} last year.",
    "{city} resident {name} is {age} and earns a living as {a_job}.",
    "Our new neighbour in {city} is {name}, {a_age_job} who {extra}.",
)


def extraction(seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 200, fmt: str = "alpaca",
               size: str = "small", schema_hint: bool = False) -> Splits:
    """A sentence about a person -> compact JSON with the keys name, age (an integer), city, job, in
    that order, e.g. {"name":"Dorvi Kalunet","age":34,"city":"Senvale","job":"baker"}.

    `schema_hint` names the keys in the instruction; without it the format must be learned from the
    examples (a skill the base model lacks, which `tunewright demo` teaches).
    """
    check_fmt("extraction", fmt)
    world = make_world(seed, size)
    parts = partition(world)
    instruction = "Extract the person's details as JSON."
    if schema_hint:
        instruction += " Use the keys " + ", ".join(EXTRACTION_KEYS) + "."

    def make(split, rng):
        p = rng.choice(parts[split].people)
        extra = rng.choice([f"enjoys {rng.choice(p.hobbies)}", f"is employed by {p.employer}",
                            f"spends weekends on {join_words(p.hobbies)}", "has two cats"])
        sentence = rng.choice(_EXTRACTION_SENTENCES).format(
            name=p.name, age=p.age, city=p.city, job=p.job, a_job=article(p.job), extra=extra,
            a_age_job=article(f"{p.age}-year-old {p.job}"))
        answer = json.dumps(dict(zip(EXTRACTION_KEYS, (p.name, p.age, p.city, p.job))), separators=(",", ":"))
        return sentence, instruct_row(instruction, sentence, answer, fmt)

    return draw_splits("extraction", seed, dict(train=n_train, validation=n_val, test=n_test), make)
