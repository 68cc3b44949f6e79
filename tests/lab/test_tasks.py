"""Every lab task: registry, determinism, split sizes, held-out inputs and entities, row formats."""

from __future__ import annotations

import json
import re

import pytest

from tunewright.config import DataSource
from tunewright.data.formats import FORMATS
from tunewright.errors import ConfigError
from tunewright.lab.tasks import TASKS, make_task, task_format, task_options
from tunewright.lab.world import make_world, partition

SMALL = dict(n_train=120, n_val=20, n_test=30)
ALL = ["arithmetic", "dialogue_summary", "extraction", "preferences", "pretraining_text", "ratings", "recommendation",
       "retrieval", "sentiment", "string_skills", "tabular", "topic", "world_qa"]
INSTRUCT = ["world_qa", "arithmetic", "string_skills", "dialogue_summary", "extraction"]
# Tasks whose rows are about the world's people and products (held out per split).
ABOUT_ENTITIES = ["pretraining_text", "world_qa", "dialogue_summary", "extraction", "sentiment", "topic", "preferences",
                  "retrieval"]


def _inputs(row: dict):
    """What a model is given of a row (never its answer or label)."""
    if "messages" in row:
        return tuple(m["content"] for m in row["messages"] if m["role"] == "user")
    if "instruction" in row:
        return row["instruction"], row["input"]
    if "prompt" in row:
        return row["prompt"]
    if "text" in row:
        return row["text"]
    return tuple(v for k, v in row.items() if k != "target")  # tabular


def test_registry_holds_every_task_and_suggests():
    assert TASKS.names() == ALL
    with pytest.raises(ConfigError, match=r"unknown lab task 'sentimnet' \(did you mean \"sentiment\"\?\)"):
        make_task("sentimnet")


def test_unknown_option_suggests_and_bad_counts_are_config_errors():
    with pytest.raises(ConfigError, match=r"extraction: unknown option 'shema_hint' \(did you mean \"schema_hint\"\?\)"):
        make_task("extraction", shema_hint=True)
    with pytest.raises(ConfigError, match=r"lab task arithmetic: n_val: expected a count >= 0, got -1"):
        make_task("arithmetic", n_val=-1)
    with pytest.raises(ConfigError, match=r"world_qa: fmt: unknown format 'mesages' \(did you mean \"messages\"\?\)"):
        make_task("world_qa", fmt="mesages")


def test_asking_more_distinct_rows_than_the_world_holds_is_an_error():
    with pytest.raises(ConfigError, match=r"world_qa: n_test: found only \d+ distinct test rows of the 500 asked"):
        make_task("world_qa", size="tiny", context=False, n_train=10, n_val=10, n_test=500)


@pytest.mark.parametrize("name", ALL)
def test_deterministic_sizes_and_no_test_input_in_training(name):
    splits = make_task(name, seed=3, **SMALL)
    assert {k: len(v) for k, v in splits.items()} == {"train": 120, "validation": 20, "test": 30}
    assert json.dumps(make_task(name, seed=3, **SMALL)) == json.dumps(splits)
    assert json.dumps(make_task(name, seed=4, **SMALL)) != json.dumps(splits)
    seen = {split: {repr(_inputs(r)) for r in rows} for split, rows in splits.items()}
    assert len(seen["train"]) == 120  # no duplicates within a split either
    assert not seen["test"] & seen["train"] and not seen["validation"] & seen["train"]
    assert not seen["test"] & seen["validation"]


@pytest.mark.parametrize("name", ABOUT_ENTITIES)
def test_test_rows_are_about_people_and_products_never_seen_in_training(name):
    world = make_world(0)
    # First names and product stems are unique words of the world, so a mention by first name
    # (dialogues, reviews) is caught too.
    words = [p.name.split()[0] for p in world.people] + [p.name.split()[0] for p in world.products]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b")
    splits = make_task(name, seed=0, n_train=400, n_val=20, n_test=60)
    mentioned = {s: {m for r in rows for m in pattern.findall(json.dumps(r))} for s, rows in splits.items()}
    held_out = {p.name.split()[0] for p in partition(world)["test"].people + partition(world)["test"].products}
    assert mentioned["test"] and mentioned["test"] <= held_out
    assert not mentioned["test"] & mentioned["train"]


def test_recommendation_test_users_never_appear_in_training():
    splits = make_task("recommendation", **SMALL)
    users = {s: {r["user"] for r in rows} for s, rows in splits.items()}
    assert users["test"] and not users["test"] & users["train"] and not users["validation"] & users["train"]


@pytest.mark.parametrize("name, fmt", [(n, "alpaca") for n in INSTRUCT] + [(n, "messages") for n in INSTRUCT]
                         + [("pretraining_text", None)])
def test_rows_load_through_their_format(name, fmt):
    options = {"fmt": fmt} if fmt else {}
    splits = make_task(name, n_train=30, n_val=5, n_test=5, **options)
    fmt_name = task_format(name, fmt)
    assert fmt_name == (fmt or "text")
    src = DataSource(path=f"{name}.jsonl", format=fmt_name)
    for split in splits.values():
        for line, row in enumerate(split, 1):
            example = FORMATS.get(fmt_name)(row, line, src)
            if fmt_name == "text":
                assert example.segments[0].text == row["text"]
            else:
                assert example.messages[-1].role == "assistant" and example.messages[-1].content.strip()


def test_alpaca_and_messages_hold_the_same_examples():
    alpaca = make_task("extraction", n_train=20, n_val=2, n_test=2)
    messages = make_task("extraction", n_train=20, n_val=2, n_test=2, fmt="messages")
    for a, m in zip(alpaca["train"], messages["train"]):
        assert m["messages"] == [{"role": "user", "content": f"{a['instruction']}\n\n{a['input']}"},
                                 {"role": "assistant", "content": a["output"]}]


def test_retrieval_pairs_a_question_with_its_entity_and_a_similar_one():
    from tunewright.lab.tasks_retrieval import PERSON_QUESTIONS, PRODUCT_QUESTIONS

    world = make_world(0)
    people, products = {p.name: p for p in world.people}, {p.name: p for p in world.products}
    longest_first = sorted([*people, *products], key=len, reverse=True)  # "Tobro Mini" before "Tobro"

    def named(text):
        return next(n for n in longest_first if n in text)

    splits = make_task("retrieval", n_train=60, n_val=5, n_test=40)
    src = DataSource(path="retrieval.jsonl", format=task_format("retrieval"))
    by_entity: dict = {}
    for line, row in enumerate(splits["test"], 1):
        example = FORMATS.get("pairs")(row, line, src)
        assert [s.text for s in example.segments] == [row["anchor"], row["positive"], row["negative"]]
        asked, other = named(row["positive"]), named(row["negative"])
        assert asked != other and asked not in row["anchor"]  # described, never named
        if asked in people:  # a person of the same job (or city); a product of the same category (or maker)
            a, b = people[asked], people[other]
            assert row["anchor"] in {q(a, world) for q in PERSON_QUESTIONS} and (a.job == b.job or a.city == b.city)
        else:
            a, b = products[asked], products[other]
            assert row["anchor"] in {q(a, world) for q in PRODUCT_QUESTIONS}
            assert a.category == b.category or a.maker == b.maker
        assert by_entity.setdefault(asked, row["positive"]) == row["positive"]  # one paragraph per entity
    assert len(by_entity) < len(splits["test"])  # some entities asked about twice


def test_formats_of_the_other_tasks_are_named():
    assert {n: task_format(n) for n in ["sentiment", "topic", "preferences", "recommendation", "tabular",
                                        "retrieval"]} == {
        "sentiment": "classification", "topic": "classification", "preferences": "preference",
        "recommendation": "classification", "tabular": "tabular", "retrieval": "pairs"}
    assert task_options("sentiment")["n_test"] == 400
