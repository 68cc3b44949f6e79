"""English about the synthetic world: encyclopedia paragraphs and short dialogues with their summaries.

Shared by the task generators (`tunewright.lab.tasks`): the paragraphs are continued-pretraining
text and the context of world questions; the dialogues are pretraining text and the inputs of the
summarization task. Each function draws its wording from the `rng` it is given (several templates
per fact, facts in varying order), so the same fact reads differently across documents while the
facts themselves stay those of the world.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tunewright.lab.world import City, Organisation, Person, Product, World

__all__ = ["CURRENCY", "DAYS", "Dialogue", "article", "join_words", "first_name", "person_paragraph", "city_paragraph",
           "org_paragraph", "product_paragraph", "dialogue"]

CURRENCY = "crowns"
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIMES = ("9 am", "10 am", "noon", "2 pm", "4 pm", "6 pm", "8 pm")


def join_words(items: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def first_name(person: Person) -> str:
    return person.name.split()[0]


def article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


# ---------------------------------------------------------------- encyclopedia paragraphs

def person_paragraph(p: Person, world: World, rng: random.Random) -> str:
    """A few sentences stating every attribute of `p` (age, city, country, job, employer, hobbies)."""
    org, city, first = world.org(p.employer), world.city(p.city), first_name(p)
    opening = rng.choice([
        f"{p.name} is {article(f'{p.age}-year-old {p.job}')} who lives in {p.city}, {city.country}.",
        f"{p.name}, aged {p.age}, lives in {p.city} in {city.country} and works as {article(p.job)}.",
        f"Born {p.age} years ago, {p.name} is {article(p.job)} living in {p.city}, {city.country}.",
    ])
    if p.job == "chief executive":
        work = rng.choice([f"{first} leads {org.name}, {article(org.industry)} company based in {org.city}.",
                           f"{first} is the chief executive of {org.name}, a {org.industry} firm from {org.city}."])
    else:
        work = rng.choice([f"{first} works for {org.name}, {article(org.industry)} company based in {org.city}.",
                           f"{first} is employed by {org.name} in {org.city}.",
                           f"{first}'s employer is {org.name}, a {org.industry} firm."])
    leisure = rng.choice([f"In their free time, {first} enjoys {join_words(p.hobbies)}.",
                          f"{first}'s hobbies are {join_words(p.hobbies)}.",
                          f"Friends know {first} for a love of {join_words(p.hobbies)}."])
    tail = [work, leisure]
    rng.shuffle(tail)
    return " ".join([opening, *tail])


def city_paragraph(c: City, world: World, rng: random.Random) -> str:
    """Country, founding year, population and a few organisations based in `c`."""
    text = rng.choice([
        f"{c.name} is a city in {c.country}. It was founded in {c.founded} and has {c.population:,} inhabitants.",
        f"Founded in {c.founded}, {c.name} is a city of {c.population:,} people in {c.country}.",
        f"The city of {c.name} lies in {c.country}; {c.population:,} people live there, "
        f"and it dates back to {c.founded}.",
    ])
    based = [o.name for o in world.orgs if o.city == c.name]
    if based:
        shown = rng.sample(based, min(3, len(based)))
        text += f" Organisations based in {c.name} include {join_words(shown)}."
    return text


def org_paragraph(o: Organisation, world: World, rng: random.Random, with_ceo: bool = True) -> str:
    """Industry, city, founding year and (when `with_ceo`) the chief executive of `o`.

    `with_ceo=False` keeps the CEO (a person, maybe held out) out of text meant for another split.
    """
    text = rng.choice([
        f"{o.name} is {article(o.industry)} company founded in {o.founded} and based in {o.city}.",
        f"Founded in {o.founded}, {o.name} is a {o.industry} business with its headquarters in {o.city}.",
        f"{o.name}, a {o.industry} company from {o.city}, was set up in {o.founded}.",
    ])
    if with_ceo:
        text += " " + rng.choice([f"Its chief executive is {o.ceo}.", f"The company is led by {o.ceo}."])
    return text


def product_paragraph(p: Product, world: World, rng: random.Random) -> str:
    """Category, maker, price and rating of `p`."""
    return rng.choice([
        f"The {p.name} is {article(p.category)} made by {p.maker}. It costs {p.price:.2f} {CURRENCY} "
        f"and buyers rate it {p.rating} out of 5.",
        f"{p.maker} makes the {p.name}, {article(p.category)} sold for {p.price:.2f} {CURRENCY}; "
        f"its average rating is {p.rating} out of 5.",
        f"Rated {p.rating} out of 5 by its buyers, the {p.name} is {article(p.category)} from {p.maker} "
        f"priced at {p.price:.2f} {CURRENCY}.",
    ])


# ---------------------------------------------------------------- dialogues

@dataclass
class Dialogue:
    """Lines "Name: utterance" joined by newlines, and the one-sentence summary they support."""

    text: str
    summary: str


def dialogue(a: Person, b: Person, world: World, products: list[Product], rng: random.Random) -> Dialogue:
    """A short chat between `a` and `b` in one of several scenarios, with its summary.

    `products` are those this split may mention. The summary needs the whole dialogue (a proposed day
    may be turned down, an invitation declined), so it is not a copy of the first line.
    """
    kinds = [_meeting, _invitation, _new_job] + ([_purchase] if products else [])
    return rng.choice(kinds)(a, b, world, products, rng)


def _chat(lines: list[tuple[Person, str]]) -> str:
    return "\n".join(f"{first_name(p)}: {text}" for p, text in lines)


def _meeting(a, b, world, products, rng) -> Dialogue:
    place = rng.choice([f"the {a.city} market", f"the {world.org(a.employer).name} office", f"the {b.city} library",
                        f"the cafe in {a.city}"])
    day1, day2 = rng.sample(DAYS, 2)
    time = rng.choice(TIMES)
    fa, fb = first_name(a), first_name(b)
    lines = [(a, rng.choice([f"Hi {fb}, can we meet at {place} on {day1}?", f"{fb}, are you free on {day1}? "
                             f"I'd like to meet at {place}."]))]
    if rng.random() < 0.5:  # the first day does not suit: the summary must use the second
        lines += [(b, rng.choice([f"{day1} is hard for me. How about {day2}?",
                                  f"Sorry, not {day1}. Would {day2} work?"])),
                  (a, f"{day2} works. Shall we say {time}?")]
        day = day2
    else:
        lines += [(b, rng.choice([f"{day1} is fine. What time?", f"Sure, {day1} suits me. When?"])),
                  (a, f"Let's say {time}.")]
        day = day1
    lines.append((b, rng.choice(["Great, see you then.", "Perfect, see you there.", "Deal."])))
    return Dialogue(_chat(lines), f"{fa} and {fb} agree to meet at {place} on {day} at {time}.")


def _invitation(a, b, world, products, rng) -> Dialogue:
    hobby = rng.choice(a.hobbies)
    day = rng.choice(DAYS)
    fa, fb = first_name(a), first_name(b)
    accepts = rng.random() < 0.5
    lines = [(a, rng.choice([f"{fb}, do you want to join me for some {hobby} on {day}?",
                             f"I'm doing {hobby} on {day}. Want to come along, {fb}?"]))]
    if accepts:
        lines.append((b, rng.choice(["I'd love to! Count me in.", f"Yes, {hobby} sounds great."])))
    else:
        lines.append((b, rng.choice([f"Thanks, but I can't make it on {day}.",
                                     f"I'll pass this time, {fa}. Too busy."])))
    lines.append((a, rng.choice(["No problem.", "Okay!"]) if not accepts else "Great, see you then."))
    verb = "accepts" if accepts else "declines"
    return Dialogue(_chat(lines), f"{fa} invites {fb} to join them for {hobby} on {day}, and {fb} {verb}.")


def _new_job(a, b, world, products, rng) -> Dialogue:
    org = rng.choice([o for o in world.orgs if o.name != a.employer])
    fa, fb = first_name(a), first_name(b)
    lines = [(a, rng.choice([f"Guess what, {fb}? I'm leaving {a.employer}.", f"Big news, {fb}: I quit {a.employer}."])),
             (b, rng.choice(["Really? Where are you going?", "Wow! What's next?"])),
             (a, f"I got a job at {org.name} in {org.city}."),
             (b, rng.choice(["Congratulations!", "That's wonderful news."]))]
    return Dialogue(_chat(lines), f"{fa} tells {fb} about leaving {a.employer} for a job at {org.name}.")


def _purchase(a, b, world, products, rng) -> Dialogue:
    p = rng.choice(products)
    fa, fb = first_name(a), first_name(b)
    likes = rng.random() < 0.5
    lines = [(b, rng.choice([f"Is that a new {p.category}, {fa}?", f"{fa}, what's that {p.category}?"])),
             (a, f"Yes, it's the {p.name}. I paid {p.price:.2f} {CURRENCY} for it."),
             (b, rng.choice(["Is it any good?", "Would you recommend it?"]))]
    lines.append((a, rng.choice(["Absolutely, get one.", "Yes, it's worth every coin."]) if likes
                  else rng.choice(["Honestly, no. Save your money.", "Not really, I regret it."])))
    verdict = "recommends it" if likes else "does not recommend it"
    return Dialogue(_chat(lines), f"{fa} bought the {p.name} for {p.price:.2f} {CURRENCY} and {verdict} to {fb}.")
