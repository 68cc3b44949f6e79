"""A small fictional world, generated from a seed: countries, cities, organisations, people, products.

Every name is built from syllables (`invent_word`), so a pretrained model cannot know any fact of
the world beforehand: what it answers about "Dorvi Kalunet" it learned from our data. The world is
the source of the lab's task data (`tunewright.lab.tasks`); `partition` splits its people and
products into train/validation/test parts, so test rows are about entities never seen in training.

    make_world(seed=0, size="small") -> World      same seed, same world (random.Random(seed), no global RNG)

Relations: a person lives in a city and works for an organisation; an organisation sits in a city
and is led by one of its employees (its CEO, whose job is "chief executive"); a product is made by
an organisation of a product-making industry; a city belongs to a country.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tunewright.errors import ConfigError
from tunewright.registry import suggest

__all__ = ["City", "Organisation", "Person", "Product", "World", "Part", "SIZES", "SPLITS", "INDUSTRIES",
           "HOBBIES", "make_world", "partition", "invent_word"]

SPLITS = ("train", "validation", "test")

# How many entities of each kind a world holds. "small" gives a few thousand distinct examples per task.
SIZES = {
    "tiny": dict(countries=3, cities=8, orgs=12, people=80, products=40),
    "small": dict(countries=6, cities=24, orgs=48, people=600, products=240),
    "large": dict(countries=12, cities=80, orgs=200, people=4000, products=1500),
}

# industry -> (name endings of its organisations, jobs of its staff, categories of its products)
INDUSTRIES = {
    "software": ((" Soft", " Labs", " Systems"), ("programmer", "designer", "tester", "data analyst"), ("app", "game")),
    "food": ((" Foods", " Kitchens", " Bakeries"), ("baker", "chef", "food taster", "farmer"),
             ("coffee", "tea", "chocolate")),
    "electronics": ((" Electronics", " Devices", " Circuits"), ("engineer", "technician", "assembler"),
                    ("headphones", "camera", "phone", "laptop")),
    "furniture": ((" Furniture", " Woodworks", " Interiors"), ("carpenter", "upholsterer", "designer"),
                  ("chair", "desk", "lamp", "sofa")),
    "clothing": ((" Apparel", " Textiles", " Wear"), ("tailor", "weaver", "designer"), ("jacket", "boots", "scarf")),
    "transport": ((" Motors", " Cycles", " Transit"), ("driver", "mechanic", "dispatcher"), ("bicycle", "scooter")),
    "healthcare": ((" Clinic", " Health", " Care"), ("nurse", "doctor", "pharmacist"), ()),
    "banking": ((" Bank", " Capital", " Finance"), ("accountant", "analyst", "cashier"), ()),
    "publishing": ((" Press", " Books", " Media"), ("editor", "writer", "translator"), ("novel", "magazine")),
}

HOBBIES = ("chess", "sailing", "pottery", "hiking", "painting", "gardening", "fishing", "cycling", "singing",
           "knitting", "climbing", "baking", "photography", "swimming", "birdwatching", "archery", "dancing",
           "poetry", "woodcarving", "astronomy")

# Syllable parts. Only a consonant cluster or a single consonant opens a syllable, so words stay
# pronounceable (and tokenize into a few pieces, like real rare names do).
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "tr", "th", "sh", "st")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "k", "th")
_CITY_ENDINGS = ("", "", "holm", "vale", "mar", "ford", "ora", "burg")
_COUNTRY_ENDINGS = ("ia", "land", "ara", "istan", "onia")
_PRODUCT_ENDINGS = ("", "", "", " Pro", " Mini", " Max", " Air", " 2", " 3", " X")
# Real words and names the syllables above can spell (checked lowercase, whole word).
_REAL_WORDS = frozenset("""
noun sour tour pour four main rain pain gain vain brain drain grain train stain sail tail mail nail fail rail
bail trail pair fair lair stair soul foul mouth south bath math path both moth than then thin shin shun stun
star stem stir drum brim trim grim dram gram tram pram sham them this thus trek bout gout pout rout tout
baron salon melon lemon robin robot rival medal metal total vital bonus venus minus lotus radar tumor motor
rotor sonar lunar solar polar model novel level denim satin sofa soda lava data beta tuba gala mama papa
lama sari kilo memo demo solo polo logo menu tofu guru sumo veto tutu pita toga diva visa tuna puma
banana tomato potato salami panel petal fetal natal tidal modal nasal basil pupil lapel rebel label bagel
navel gavel motel morel lumen token taken laden seven given raven haven linen siren talon felon baton
piton demon lemur femur rumor tenor manor minor donor valor tutor sugar pedal
tina lena nina dina mona nora dora kara sara lara tara vera rita rosa maria mario bruno rina lisa denis
boris doris damon simon kevin devin karen karin daren darin sonia tania tomas tobias romeo dino gino lino
nino remo paolo monika sofia lola lila mila nala tessa nadia mira kira zara tamara samara talia dalia delia
lorena serena selena teresa marisa sasha misha pasha tasha natasha masha dasha shani shana shira shimon
stefan lana dana mina nika toni rona dara gaia maia laila leila lara kai tom dan sam ken ben tim kim ron don
""".split())

# Real words that end many names; only the invented words of a name must be unique.
_COMMON = {w for e in _PRODUCT_ENDINGS + tuple(x for v in INDUSTRIES.values() for x in v[0]) for w in e.split()}


@dataclass
class City:
    name: str
    country: str
    population: int
    founded: int  # year


@dataclass
class Organisation:
    name: str
    industry: str  # a key of INDUSTRIES
    city: str
    founded: int  # year
    ceo: str = ""  # a person's name, filled once the staff exists


@dataclass
class Person:
    name: str  # "First Last"
    age: int
    city: str
    job: str
    employer: str  # an organisation's name
    hobbies: list[str]


@dataclass
class Product:
    name: str
    maker: str  # an organisation's name
    category: str
    price: float  # in the world's currency, two decimals
    rating: float  # 1.0 .. 5.0, one decimal


@dataclass
class World:
    """All entities of one seeded world, with lookups by name."""

    seed: int
    size: str
    countries: list[str]
    cities: list[City]
    orgs: list[Organisation]
    people: list[Person]
    products: list[Product]
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        for kind in ("cities", "orgs", "people", "products"):
            self._index[kind] = {e.name: e for e in getattr(self, kind)}

    def city(self, name: str) -> City:
        return self._index["cities"][name]

    def org(self, name: str) -> Organisation:
        return self._index["orgs"][name]

    def person(self, name: str) -> Person:
        return self._index["people"][name]

    def product(self, name: str) -> Product:
        return self._index["products"][name]


@dataclass
class Part:
    """The entities one split may mention: its own people and products (held out from the other
    splits), plus the shared background of cities and organisations.

    An organisation's CEO is a person, so a fact naming the CEO belongs only to the CEO's part:
    `led_orgs` lists the organisations whose CEO is in this part.
    """

    split: str
    people: list[Person]
    products: list[Product]
    led_orgs: list[Organisation]


def invent_word(rng: random.Random, syllables: int) -> str:
    """A capitalised pronounceable non-word of `syllables` syllables, e.g. "Dorvi", "Kalunet".

    Drawn again when it is a common English word or given name the syllables can spell, or ends in
    "e" (CVCe is how English spells "lake", "tone", "rule"), so a model cannot know it beforehand.
    """
    while True:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        if not word.endswith("e") and word not in _REAL_WORDS:
            return word.capitalize()


def _fresh(rng: random.Random, used: set[str], make) -> str:
    """A name from `make(rng)` never produced before in this world (any kind), so every name is
    unambiguous in text: a city never shares a word with a person or a product."""
    for _ in range(1000):
        name = make(rng)
        words = [w for w in name.split() if w not in _COMMON]
        # Short words ("Le") read like real words or initials; four letters at least.
        if name not in used and not any(w in used or len(w) < 4 for w in words):
            used.add(name)
            used.update(words)
            return name
    raise RuntimeError("ran out of invented names; the syllable tables are too small for this size")


def make_world(seed: int = 0, size: str = "small") -> World:
    """Generate the world of `seed` with the entity counts of `SIZES[size]`."""
    if size not in SIZES:
        raise ConfigError(f"unknown world size {size!r}{suggest(size, SIZES)}; known: {', '.join(SIZES)}")
    n = SIZES[size]
    rng = random.Random(seed)
    used: set[str] = set()

    countries = [_fresh(rng, used, lambda r: invent_word(r, r.randint(1, 2)) + r.choice(_COUNTRY_ENDINGS))
                 for _ in range(n["countries"])]
    cities = [City(name=_fresh(rng, used, lambda r: invent_word(r, r.randint(1, 2)) + r.choice(_CITY_ENDINGS)),
                   country=countries[i % len(countries)],  # every country has cities
                   population=int(rng.lognormvariate(11.5, 1.0)) // 100 * 100 + 1000,
                   founded=rng.randint(800, 1950))
              for i in range(n["cities"])]

    industries = list(INDUSTRIES)
    orgs = []
    for i in range(n["orgs"]):
        industry = industries[i % len(industries)]  # every industry has organisations
        endings = INDUSTRIES[industry][0]
        orgs.append(Organisation(name=_fresh(rng, used, lambda r: invent_word(r, r.randint(2, 3)) + r.choice(endings)),
                                 industry=industry, city=rng.choice(cities).name, founded=rng.randint(1850, 2020)))

    people = []
    for i in range(n["people"]):
        employer = orgs[i] if i < len(orgs) else rng.choice(orgs)  # every organisation has staff
        # Most people live where they work; some commute from another city.
        city = employer.city if rng.random() < 0.75 else rng.choice(cities).name
        name = _fresh(rng, used, lambda r: f"{invent_word(r, r.randint(1, 2))} {invent_word(r, r.randint(2, 3))}")
        people.append(Person(name=name, age=rng.randint(19, 78), city=city,
                             job=rng.choice(INDUSTRIES[employer.industry][1]), employer=employer.name,
                             hobbies=sorted(rng.sample(HOBBIES, rng.randint(1, 3)))))

    for org in orgs:
        staff = [p for p in people if p.employer == org.name]
        ceo = max(staff, key=lambda p: (p.age >= 30, rng.random()))  # an adult of some standing if there is one
        ceo.job = "chief executive"
        org.ceo = ceo.name

    makers = [o for o in orgs if INDUSTRIES[o.industry][2]]
    products = []
    for _ in range(n["products"]):
        maker = rng.choice(makers)
        products.append(Product(name=_fresh(rng, used, lambda r: invent_word(r, 2) + r.choice(_PRODUCT_ENDINGS)),
                                maker=maker.name, category=rng.choice(INDUSTRIES[maker.industry][2]),
                                price=round(rng.lognormvariate(4.0, 0.9) + 1.0, 2),
                                rating=round(rng.uniform(1.0, 5.0), 1)))
    return World(seed=seed, size=size, countries=countries, cities=cities, orgs=orgs, people=people, products=products)


def partition(world: World, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, Part]:
    """Split the world's people and products into disjoint train/validation/test parts.

    Seeded by the world's seed alone, so every task drawn from one world holds out the same
    entities (continued pretraining and QA on the same seed agree on what is unseen).
    """
    rng = random.Random(f"partition:{world.seed}")
    people, products = list(world.people), list(world.products)
    rng.shuffle(people)
    rng.shuffle(products)
    parts = {}
    for split, (pe, pr) in zip(SPLITS, zip(_cut(people, fractions), _cut(products, fractions))):
        names = {p.name for p in pe}
        parts[split] = Part(split=split, people=pe, products=pr, led_orgs=[o for o in world.orgs if o.ceo in names])
    return parts


def _cut(items: list, fractions: tuple[float, float, float]) -> list[list]:
    """Three consecutive slices of `items` sized by `fractions` (each at least one item)."""
    total = sum(fractions)
    a = max(1, round(len(items) * fractions[0] / total))
    b = a + max(1, round(len(items) * fractions[1] / total))
    return [items[:a], items[a:b], items[b:]]
