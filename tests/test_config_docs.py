"""The generated config reference: the committed page matches the schema, documents every field
of every section, and `python -m tunewright.config_docs [--check]` writes and checks it."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

import tunewright.config_docs as config_docs
from tunewright.config import DataSource, EarlyStopping, RunConfig
from tunewright.config_docs import main, render_reference
from tunewright.models.methods import METHOD_CONFIGS
from tunewright.objectives import OBJECTIVE_CONFIGS
from tunewright.regularizers import REGULARIZER_CONFIGS
from tunewright.sections import Section

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _tables(page: str) -> dict[str, list[list[str]]]:
    """`## heading` -> rows of its table, each row split into its 4 cells (escaped pipes kept)."""
    out: dict[str, list[list[str]]] = {}
    heading = None
    for line in page.splitlines():
        if line.startswith("## "):
            heading = line[3:]
            out[heading] = []
        elif heading and line.startswith("| ") and not line.startswith("| key "):
            out[heading].append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return out


def _models(model: type[BaseModel]) -> set[type[BaseModel]]:
    """Every section class reachable from `model` (our own walk, not the module's)."""
    found = {model}

    def walk(tp):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in found:
                found.update(_models(tp))
        for arg in typing.get_args(tp):
            walk(arg)

    for info in model.model_fields.values():
        walk(info.annotation)
    return found


def test_committed_page_is_current():
    assert PAGE.is_file(), "docs/config.md is missing: run `python -m tunewright.config_docs`"
    assert PAGE.read_text(encoding="utf-8") == render_reference(), (
        "docs/config.md is stale: run `python -m tunewright.config_docs` and commit the result")


def test_every_field_of_every_section_has_a_row():
    tables = _tables(render_reference())
    models = _models(RunConfig) | set(METHOD_CONFIGS.values()) | set(REGULARIZER_CONFIGS.values())
    # The walk above must reach the nested sections, or this test would check too little.
    assert {DataSource, EarlyStopping} | set(METHOD_CONFIGS.values()) | set(REGULARIZER_CONFIGS.values()) <= models
    for model in models:
        keys = set(model.model_fields)
        matching = [h for h, rows in tables.items() if {r[0].strip("`") for r in rows} == keys]
        assert matching, f"no table lists exactly the keys of {model.__name__}: {sorted(keys)}"


def test_sections_are_named_by_their_yaml_paths():
    tables = _tables(render_reference())
    expected = {"Top-level keys", "`data.datasets[]`", "`eval.early_stopping`"}
    expected |= {f"`{name}`" for name in RunConfig.model_fields if name not in ("method", "objective", "regularizers", "plugins")}
    expected |= {f"`method` with `name: {name}`" for name in METHOD_CONFIGS}
    expected |= {f"`objective` with `name: {name}`" for name in OBJECTIVE_CONFIGS}
    # a union of one member so far is still titled by its name, ready for the next one
    expected |= {f"`regularizers[]` with `name: {name}`" for name in REGULARIZER_CONFIGS}
    assert expected <= set(tables)
    # DataSource is documented once; eval_datasets points at it rather than repeating the table.
    assert "`data.eval_datasets[]`" not in tables
    assert "The items of `data.eval_datasets[]` have the same keys." in render_reference()


def test_rows_show_type_bounds_default_and_description():
    tables = _tables(render_reference())
    rows = {r[0]: r for r in tables["`train`"]}
    assert rows["`batch_size`"] == ["`batch_size`", "`int` (> 0)", "`8`",
                                    RunConfig.model_fields["train"].annotation.model_fields["batch_size"].description]
    assert rows["`max_grad_norm`"][1:3] == ["`float \\| null` (> 0)", "`1.0`"]
    assert rows["`lr_scheduler`"][1] == '`"linear" \\| "cosine" \\| "constant"`'
    data = {r[0]: r for r in tables["`data`"]}
    assert data["`datasets`"][1:3] == ["`list of sections` (at least 1 item)", "*required*"]
    assert "[data.datasets[]](#data-datasets)" in data["`datasets`"][3]
    lora = {r[0]: r for r in tables["`method` with `name: lora`"]}
    assert lora["`target_modules`"][2] == '`["q_proj", "v_proj"]`'
    top = {r[0]: r for r in tables["Top-level keys"]}
    assert top["`method`"][2] == "`{name: lora}`" and top["`data`"][2] == "*required*"
    assert top["`regularizers`"][1:3] == ["`list of sections`", "`[]`"]
    assert "[regularizers[] (name: l2_sp)](#regularizers-l2-sp)" in top["`regularizers`"][3]
    l2_sp = {r[0]: r for r in tables["`regularizers[]` with `name: l2_sp`"]}
    assert l2_sp["`weight`"][1:3] == ["`float` (>= 0)", "`0.01`"]


def test_every_table_row_has_four_cells_and_every_link_resolves():
    page = render_reference()
    widths = []  # unescaped pipes per line, for each table: a stray `|` in a cell adds one
    for line in page.splitlines() + [""]:
        if line.startswith("|"):
            widths.append(len(re.findall(r"(?<!\\)\|", line)))
        elif widths:
            assert len(set(widths)) == 1, widths
            widths = []
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', page))
    links = set(re.findall(r"\]\(#([^)]+)\)", page))
    assert links and links <= anchors
    assert "<dir>" not in page and "&lt;dir>/&lt;name>" in page  # not swallowed as HTML


def test_header_says_generated_and_how_to_regenerate():
    head = render_reference()[:800]
    assert "Do not edit by hand" in head
    assert "python -m tunewright.config_docs" in head and "--check" in head


def test_cli_writes_then_check_detects_stale_and_missing(tmp_path, capsys):
    out = tmp_path / "docs" / "config.md"
    assert main(["--check", "--output", str(out)]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_reference()
    assert main(["--check", "--output", str(out)]) == 0
    out.write_text(render_reference().replace("Peak learning rate.", "Old text."), encoding="utf-8")
    assert main(["--check", "--output", str(out)]) == 1
    assert "stale" in capsys.readouterr().err
    assert "Old text." in out.read_text(encoding="utf-8")  # --check never writes


def test_module_entry_point_writes_docs_config_md_under_cwd(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tunewright.config_docs"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "docs" / "config.md").read_text(encoding="utf-8") == render_reference()
    stale = subprocess.run([sys.executable, "-m", "tunewright.config_docs", "--check", "--output",
                            str(tmp_path / "other.md")], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
    assert stale.returncode == 1


def test_walks_any_schema_nested_lists_optionals_and_unlisted_methods(monkeypatch):
    class Inner(Section):
        depth: int = Field(2, ge=1, description="How deep | really.")

    class Leaf(Section):
        flag: bool = Field(True, description="A flag.")

    class Outer(Section):
        items: list[Inner] = Field(default_factory=list, description="Some items.")
        leaf: Leaf | None = Field(None, description="An optional leaf.")

    class Root(Section):
        outer: Outer = Field(default_factory=Outer, description="The outer section.")

    class Extra(Section):
        name: Literal["extra"] = Field("extra", description="A method nobody put in the union.")
        knob: float = Field(0.5, lt=1, description="A knob.")

    monkeypatch.setattr(config_docs, "RunConfig", Root)
    monkeypatch.setattr(config_docs, "FAMILIES", {"method": ({"extra": Extra}, {})})
    tables = _tables(render_reference())
    assert [r[0] for r in tables["`outer.items[]`"]] == ["`depth`"]
    assert tables["`outer.items[]`"][0][1:] == ["`int` (>= 1)", "`2`", "How deep \\| really."]
    assert [r[0] for r in tables["`outer.leaf`"]] == ["`flag`"]
    assert tables["`method` with `name: extra`"][1][:3] == ["`knob`", "`float` (< 1)", "`0.5`"]
