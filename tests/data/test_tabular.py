"""Table rows as text: both built-in serializations and a Jinja file, units, missing values, the
question, and the target column kept out of the prompt whatever the template asks."""

from __future__ import annotations

import pytest

from tunewright.config import DataSource
from tunewright.data.formats import format_row
from tunewright.errors import ConfigError, DataError

HOUSE = {"area_m2": 85, "rooms": 3, "city": "Orlen", "garden": "yes", "distance_km": 3.14159265, "target": "Yes"}


def _src(**tabular) -> DataSource:
    return DataSource(path="t.csv", format="tabular", tabular=tabular)


def test_sentences_and_key_value_with_units_and_the_question():
    ex = format_row(HOUSE, 4, _src(units={"area_m2": "m²"}, question="Is the price above the median? Yes or No."))
    assert ex.messages[0].content == ("The area m2 is 85 m². The rooms is 3. The city is Orlen. The garden is yes. "
                                      "The distance km is 3.14159.\n\nIs the price above the median? Yes or No.")
    assert ex.messages[1].content == "Yes"
    kv = format_row(HOUSE, 4, _src(serialization="key_value", features=["city", "rooms"]))
    assert kv.messages[0].content == "city: Orlen\nrooms: 3"
    missing = format_row({**HOUSE, "rooms": None, "city": ""}, 5, _src(serialization="key_value"))
    assert "rooms: unknown\ncity: unknown" in missing.messages[0].content
    assert format_row({"x": 1.0, "y": True}, 6, _src(target="y")).messages[1].content == "Yes"


def test_the_target_never_reaches_the_prompt(tmp_path):
    for serialization in ("sentences", "key_value"):
        prompts = {format_row({**HOUSE, "target": value}, 1, _src(serialization=serialization)).messages[0].content
                   for value in ("Yes", "No", "target=Yes")}
        assert len(prompts) == 1  # the target's value changes nothing in the prompt
        assert "target" not in prompts.pop()
    template = tmp_path / "row.jinja"
    template.write_text("{% for name, value, unit in features %}{{ name }}={{ value }};{% endfor %}")
    ex = format_row(HOUSE, 1, _src(serialization=str(template)))
    assert ex.messages[0].content == "area_m2=85;rooms=3;city=Orlen;garden=yes;distance_km=3.14159;"
    template.write_text("{{ row.city }} {{ row.target }}")  # asking for the target is an error, not a leak
    with pytest.raises(ConfigError, match=r"t.csv: tabular.serialization: .*row.jinja: UndefinedError"):
        format_row(HOUSE, 1, _src(serialization=str(template)))
    with pytest.raises(ConfigError, match="lists the target 'target'"):
        format_row(HOUSE, 1, _src(features=["city", "target"]))


@pytest.mark.parametrize("row, tabular, message", [
    ({"a": 1}, {}, "t.csv:3: target: the target column is missing; columns: a"),
    ({"a": 1, "target": None}, {}, "t.csv:3: target: empty target"),
    ({"a": 1, "target": [1]}, {}, "t.csv:3: target: expected a value, got a list"),
    ({"a": {"b": 1}, "target": "x"}, {}, "t.csv:3: a: expected a number, text or boolean, got an object"),
    ({"a": 1, "target": "x"}, {"features": ["b"]}, "t.csv:3: b: missing (named in tabular.features)"),
    ({"target": "x"}, {}, "t.csv:3: no feature columns besides the target 'target'"),
])
def test_bad_rows_name_the_column(row, tabular, message):
    with pytest.raises(DataError) as info:
        format_row(row, 3, _src(**tabular))
    assert str(info.value).startswith(message)


def test_options_are_checked():
    with pytest.raises(ValueError, match="serialization: expected sentences, key_value or a .jinja file"):
        _src(serialization="prose")
    with pytest.raises(ValueError, match="tabular: options for format tabular"):
        DataSource(path="x.jsonl", format="alpaca", tabular={"target": "y"})
