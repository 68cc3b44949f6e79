"""Seeded generators of malformed data files for the data fuzz test (issue 7, point 4).

Each generator returns `Case`s: the bytes of one file, the `DataSource` settings to read it with,
what reading it under `on_error: raise` must report (the line and field of the first bad row, or
only the file for a whole-file problem), and, for files that mix good and bad rows, the exact
examples `on_error: skip` must load. The expectations come from how the file was built, not from
the loader, so a loader that reads the wrong line or silently drops a good row fails.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field

__all__ = ["Case", "CLASSES", "all_cases", "signature"]

WORDS = ["alpha", "beta", "naïve", "café", "日本語", "emoji 🙂", "comma, inside", 'a "quote"', "tab\there",
         "x" * 40, "ünïcödé", "semi;colon", "back\\slash", "{brace}", "[bracket]", "0", "null", "true"]


@dataclass
class Case:
    kind: str
    name: str  # file name, its extension choosing the reader
    data: bytes
    source: dict = field(default_factory=dict)  # DataSource settings besides `path`
    line: int | None = None  # line the raise-mode error names (None: whole-file problem)
    field: str | None = None  # field it names (None: not a field problem)
    good: list | None = None  # signatures skip mode loads, in order; None: skip raises too
    bad: int = 0  # rows skip mode counts as skipped
    config_error: bool = False  # a `columns`/`roles` mistake: a ConfigError naming `field`
    good_rows: int | None = None  # good rows in the file, when not one per signature (ranked rows)

    @property
    def rows(self) -> int:
        """Rows in the file, good and bad."""
        return (len(self.good or []) if self.good_rows is None else self.good_rows) + self.bad


def signature(messages=None, segments=None, responses=None, label=None) -> tuple:
    """What an example holds, comparable between a built row and a loaded `Example`."""
    if responses is not None:  # preference formats: the prompt, each response, the label
        return signature(messages), tuple(signature(r) for r in responses), label
    if segments is not None:
        return tuple(("segment", s.text, s.train) for s in segments)
    return tuple((m.role, m.content, m.context) for m in messages)


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))


def _alpaca(rng: random.Random) -> tuple[dict, tuple]:
    row = {"instruction": _text(rng), "output": _text(rng)}
    context = _text(rng) if rng.random() < 0.3 else None
    if context:
        row["input"] = context
    return row, (("user", row["instruction"], context), ("assistant", row["output"], None))


def _chat(rng: random.Random) -> tuple[dict, tuple]:
    turns = [{"role": "user", "content": _text(rng)}, {"role": "assistant", "content": _text(rng)}]
    return {"messages": turns}, tuple((t["role"], t["content"], None) for t in turns)


# ---------------------------------------------------------------- file writers (row -> line)

def _jsonl(rows: list) -> tuple[bytes, list[int]]:
    """rows: dicts or raw bytes lines; blank lines sprinkled in. Returns (data, line of each row)."""
    out, lines, n = [], [], 0
    for i, row in enumerate(rows):
        if i % 3 == 2:
            out.append(b"")
            n += 1
        out.append(row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode())
        n += 1
        lines.append(n)
    return b"\n".join(out) + b"\n", lines


def _json(rows: list) -> tuple[bytes, list[int]]:
    body = ",\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows)
    return f"[\n{body}\n]\n".encode(), [i + 2 for i in range(len(rows))]


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _parquet(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _mixed(rng: random.Random, kind: str, i: int, bad_rows: list[tuple[object, str | None]],
           good=_alpaca, writer=_jsonl, ext="jsonl", source=None) -> Case:
    """Good rows with `bad_rows` ((row or raw line, field)) at random places, in a jsonl/json file."""
    items = [("good",) + good(rng) for _ in range(rng.randint(1, 5))]
    for bad in bad_rows:
        items.insert(rng.randint(0, len(items)), ("bad",) + tuple(bad))
    data, lines = writer([it[1] for it in items])
    bad_at = [(ln, it[2]) for ln, it in zip(lines, items) if it[0] == "bad"]
    # a good row's signature may be a list: a `ranked` row loads as one example per pair
    good_sigs = [s for it in items if it[0] == "good" for s in (it[2] if isinstance(it[2], list) else [it[2]])]
    return Case(kind, f"{kind}_{i}.{ext}", data, source or {}, line=bad_at[0][0], field=bad_at[0][1],
                good=good_sigs, bad=len(bad_rows), good_rows=sum(it[0] == "good" for it in items))


# ---------------------------------------------------------------- the classes

BROKEN_LINES = [b'{"instruction": "x", "output": ', b'{"instruction": "x" "output": "y"}', b"{'instruction': 'x'}",
                b"not json at all", b'{"instruction": "x", "output": "y",}', b"[1, 2]", b'"a string"', b"42",
                b"null", b'{"instruction": "x"}}', b'{"a": NaNx}', b"{", b"}"]


def broken_json(rng, i):
    """jsonl lines that do not parse or are not objects (skippable), json lists broken mid-way."""
    if i % 2 == 0:
        return _mixed(rng, "broken_json", i, [(rng.choice(BROKEN_LINES), None) for _ in range(rng.randint(1, 3))])
    rows = [json.dumps(_alpaca(rng)[0], ensure_ascii=False) for _ in range(rng.randint(2, 6))]
    k = rng.randrange(len(rows))
    choice = i // 2 % 4
    if choice == 0:  # a non-object item: skippable, at its own line
        rows.insert(k, rng.choice(['"text"', "[1]", "7", "null"]))
        data, lines = _json(rows)
        good = [json.loads(r) for r in rows if r.startswith("{")]
        return Case("broken_json", f"broken_json_{i}.json", data, line=lines[k],
                    good=[(("user", g["instruction"], g.get("input")), ("assistant", g["output"], None)) for g in good],
                    bad=1)
    if choice == 1:  # a cut-off object: the whole file is unreadable after it
        rows[k] = rows[k][: rng.randint(1, len(rows[k]) - 1)]
    elif choice == 2:  # a missing comma between items
        rows[k] = rows[k] + " {}"
    else:  # a stray token
        rows[k] = "@" + rows[k]
    data, lines = _json(rows)
    try:
        json.loads(data)
        line = None
    except json.JSONDecodeError as e:
        line = e.lineno
    return Case("broken_json", f"broken_json_{i}.json", data, line=line)


def broken_csv(rng, i):
    """Rows with the wrong number of cells (skippable), unbalanced quotes and duplicate headers."""
    header = ["instruction", "output"]
    rows = [_alpaca(rng)[0] for _ in range(rng.randint(2, 6))]
    cells = [[r["instruction"], r["output"]] for r in rows]
    k = rng.randrange(len(cells))
    choice = i % 3
    if choice == 0:
        cells[k] = cells[k] + ["extra"] * rng.randint(1, 3) if rng.random() < 0.5 else cells[k][:1]
        good = [(("user", c[0], None), ("assistant", c[1], None)) for j, c in enumerate(cells) if j != k]
        return Case("broken_csv", f"broken_csv_{i}.csv", _csv(header, cells), line=k + 2, good=good, bad=1)
    if choice == 1:  # an unclosed quote mid-file would swallow every later row into one cell
        cells = [[c.replace('"', "") for c in row] for row in cells]
        bad = f'{cells[k][0]},"{cells[k][1]}\n'.encode()
        data = _csv(header, cells[:k]) + bad + _csv(header, cells[k + 1:]).split(b"\n", 1)[1]
        return Case("broken_csv", f"broken_csv_{i}.csv", data, line=k + 2)
    dup = rng.choice(header)
    return Case("broken_csv", f"broken_csv_{i}.csv", _csv(header + [dup], [c + ["x"] for c in cells]),
                line=1, field=dup)


def broken_parquet(rng, i):
    """Truncated, corrupted or foreign bytes under a .parquet name; null cells of a string column."""
    good_bytes = _parquet({"instruction": ["a", "b"], "output": ["c", "d"]})
    choice = i % 4
    if choice == 0:
        data = good_bytes[: rng.randint(1, len(good_bytes) - 1)]
    elif choice == 1:
        data = bytearray(good_bytes)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(8, len(data) - 8)] = rng.randrange(256)
        data = bytes(data)
        if data == good_bytes:
            data = data[:-1]
    elif choice == 2:
        data = rng.choice([b"PAR1", b"PAR1PAR1", json.dumps([{"instruction": "x"}]).encode(), bytes(rng.randbytes(64))])
    else:
        rows = [_alpaca(rng)[0] for _ in range(rng.randint(2, 6))]
        k = rng.randrange(len(rows))
        col = rng.choice(["instruction", "output"])
        rows[k][col] = None
        data = _parquet({"instruction": [r["instruction"] for r in rows], "output": [r["output"] for r in rows]})
        good = [(("user", r["instruction"], None), ("assistant", r["output"], None)) for j, r in enumerate(rows) if j != k]
        return Case("broken_parquet", f"broken_parquet_{i}.parquet", data, line=k + 1, field=col, good=good, bad=1)
    return Case("broken_parquet", f"broken_parquet_{i}.parquet", data)


WRONG = [5, 2.5, True, False, [1, 2], {"a": "b"}, ["text"]]


def wrong_types(rng, i):
    """A string field given a number, boolean, list or object; turn lists that are not lists."""
    choice = i % 4
    if choice == 0:
        col = rng.choice(["instruction", "output", "input", "system"])
        row = {**_alpaca(rng)[0], col: rng.choice(WRONG)}
        return _mixed(rng, "wrong_types", i, [(row, col)])
    if choice == 1:
        row, _ = _chat(rng)
        t = rng.randrange(2)
        key = rng.choice(["content", "train"])
        row["messages"][t][key] = rng.choice(WRONG[:2] + WRONG[4:]) if key == "content" else rng.choice(["yes", 1, [True]])
        return _mixed(rng, "wrong_types", i, [(row, f"messages[{t}].{key}")], good=_chat, source={"format": "messages"})
    if choice == 2:
        row = {"messages": rng.choice(["hello", 3, {"role": "user"}, None])}
        return _mixed(rng, "wrong_types", i, [(row, "messages")], good=_chat, source={"format": "messages"},
                      writer=_json, ext="json")
    col = rng.choice(["instruction", "output"])
    return _mixed(rng, "wrong_types", i, [({**_alpaca(rng)[0], col: rng.choice(WRONG)}, col)], writer=_json, ext="json")


def _plain_text(rng):
    t = _text(rng)
    return {"text": t}, (("segment", t, True),)


def _prompt_completion(rng):
    p, c = _text(rng), _text(rng)
    return {"prompt": p, "completion": c}, (("segment", p, False), ("segment", c, True))


def missing_or_empty(rng, i):
    """Required fields absent, null, empty or blank; empty turn lists and assistant replies."""
    choice = i % 4
    if choice == 0:
        row, _ = _alpaca(rng)
        col = rng.choice(["instruction", "output"])
        if rng.random() < 0.5:
            del row[col]
        else:
            row[col] = rng.choice(["", "   ", "\n\t", None])
        return _mixed(rng, "missing_or_empty", i, [(row, col)])
    if choice == 1:
        row, _ = _chat(rng)
        pick = rng.randrange(3)
        if pick == 0:
            row["messages"], where = [], "messages"
        elif pick == 1:
            del row["messages"][0]["content"]
            where = "messages[0].content"
        else:
            row["messages"][1]["content"], where = rng.choice(["", "  "]), "messages[1].content"
        return _mixed(rng, "missing_or_empty", i, [(row, where)], good=_chat, source={"format": "messages"})
    if choice == 2:
        rows = [_alpaca(rng)[0] for _ in range(rng.randint(2, 5))]
        k = rng.randrange(len(rows))
        col = rng.choice(["instruction", "output"])
        rows[k][col] = rng.choice(["", " "])
        data = _csv(["instruction", "output"], [[r["instruction"], r["output"]] for r in rows])
        good = [(("user", r["instruction"], None), ("assistant", r["output"], None)) for j, r in enumerate(rows) if j != k]
        return Case("missing_or_empty", f"missing_or_empty_{i}.csv", data, line=k + 2, field=col, good=good, bad=1)
    row = rng.choice([({"text": ""}, "text", "text"), ({"body": "x"}, "text", "text"),
                      ({"prompt": "p"}, "completion", "prompt_completion"),
                      ({"prompt": " ", "completion": "c"}, "prompt", "prompt_completion")])
    good = {"text": _plain_text, "prompt_completion": _prompt_completion}[row[2]]
    return _mixed(rng, "missing_or_empty", i, [(row[0], row[1])], good=good, source={"format": row[2]})


def huge_rows(rng, i):
    """Rows of 50-400 KB: huge good rows load whole; huge broken ones give a short one-line error."""
    size = rng.randint(50_000, 400_000)
    big = ("lorem ipsum " * (size // 12 + 1))[:size]
    choice = i % 3
    if choice == 0:  # a huge broken line among good rows, some of them huge too
        def good(r):
            row, sig = _alpaca(r)
            if r.random() < 0.5:
                row["output"] = big
                sig = (sig[0], ("assistant", big, None))
            return row, sig
        raw = json.dumps({"instruction": big, "output": "x"}).encode()[: rng.randint(size // 2, size)]
        return _mixed(rng, "huge_rows", i, [(raw, None)], good=good)
    if choice == 1:  # a huge value of the wrong type
        return _mixed(rng, "huge_rows", i, [({"instruction": big.split(), "output": "x"}, "instruction")])
    rows = [_alpaca(rng)[0] for _ in range(3)]  # csv: a huge cell passes the 128 KiB field limit
    rows[1]["output"] = big
    cells = [[r["instruction"], r["output"]] for r in rows] + [["only one cell"]]
    good = [(("user", r["instruction"], None), ("assistant", r["output"], None)) for r in rows]
    return Case("huge_rows", f"huge_rows_{i}.csv", _csv(["instruction", "output"], cells), line=5, good=good, bad=1)


BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]


def invalid_utf8(rng, i):
    """Bytes that are not UTF-8: a skippable jsonl line, or a json/csv file that cannot be decoded."""
    bad = rng.choice(BAD_UTF8)
    choice = i % 3
    if choice == 0:
        raw = json.dumps({"instruction": "x", "output": "y"}).encode().replace(b"x", bad)
        return _mixed(rng, "invalid_utf8", i, [(raw, None)])
    rows = [_alpaca(rng)[0] for _ in range(rng.randint(2, 5))]
    k = rng.randrange(len(rows))
    if choice == 1:
        data, lines = _json(rows)
        line = lines[k]
    else:
        data, line = _csv(["instruction", "output"], [[r["instruction"], r["output"]] for r in rows]), k + 2
    parts = data.split(b"\n")
    parts[line - 1] = parts[line - 1][:3] + bad + parts[line - 1][3:]
    return Case("invalid_utf8", f"invalid_utf8_{i}.{'json' if choice == 1 else 'csv'}", b"\n".join(parts), line=line)


def empty_files(rng, i):
    """Nothing to read: zero bytes, whitespace, a BOM, `[]`, a csv header alone, a 0-row parquet."""
    blank = b"".join(rng.choice([b" ", b"\n", b"\t", b"\r\n"]) for _ in range(rng.randint(1, 20)))
    options = [("jsonl", b""), ("jsonl", blank), ("json", b""), ("json", b"[]"), ("json", b" [ ]\n"),
               ("csv", b""), ("csv", b"instruction,output\n"), ("csv", b"\xef\xbb\xbf"), ("jsonl", b"\xef\xbb\xbf\n"),
               ("parquet", b""), ("parquet", _parquet({"instruction": [], "output": []})), ("json", blank), ("csv", blank)]
    ext, data = options[i % len(options)]
    return Case("empty_files", f"empty_files_{i}.{ext}", data)


def bad_roles(rng, i):
    """Unknown, misspelled or non-string roles; system turns out of place; no assistant turn."""
    choice = i % 4
    if choice == 0:
        row, _ = _chat(rng)
        t = rng.randrange(2)
        role = rng.choice(["bot", "asistant", "USER", "human", 1, None, "", ["user"], "tool"])
        row["messages"][t]["role"] = role
        if role is None:
            del row["messages"][t]["role"]
        return _mixed(rng, "bad_roles", i, [(row, f"messages[{t}].role")], good=_chat, source={"format": "messages"})
    if choice == 1:
        row, _ = _chat(rng)
        if rng.random() < 0.5:
            row["messages"].append({"role": "system", "content": "late"})
            where = "messages[2].role"
        else:
            row["messages"][1]["role"], where = "user", "messages"
        return _mixed(rng, "bad_roles", i, [(row, where)], good=_chat, source={"format": "messages"})
    if choice == 2:
        def good(r):
            h, g = _text(r), _text(r)
            return ({"conversations": [{"from": "human", "value": h}, {"from": "gpt", "value": g}]},
                    (("user", h, None), ("assistant", g, None)))
        row = {"conversations": [{"from": rng.choice(["robot", "hman", "gtp", 0]), "value": "x"},
                                 {"from": "gpt", "value": "y"}]}
        return _mixed(rng, "bad_roles", i, [(row, "conversations[0].from")], good=good, source={"format": "sharegpt"})
    row, _ = _chat(rng)
    target = rng.choice(["assistnt", "bot", "System", ""])
    data, _ = _jsonl([row])
    return Case("bad_roles", f"bad_roles_{i}.jsonl", data, {"format": "messages", "roles": {"bot": target}},
                field="roles", config_error=True)


def bad_column_mappings(rng, i):
    """`columns` naming a column some rows lack, a field the format does not have, or a typo'd header."""
    choice = i % 3
    if choice == 0:
        def good(r):
            row, sig = _alpaca(r)
            row["question"] = row.pop("instruction")
            return row, sig
        return _mixed(rng, "bad_column_mappings", i, [(_alpaca(rng)[0], "question")], good=good,
                      source={"columns": {"instruction": "question"}})
    if choice == 1:
        ours = rng.choice(["instrution", "prompt", "messages", "answer", "outputs"])
        data, _ = _jsonl([_alpaca(rng)[0]])
        return Case("bad_column_mappings", f"bad_column_mappings_{i}.jsonl", data, {"columns": {ours: "x"}},
                    field="columns", config_error=True)
    rows = [_alpaca(rng)[0] for _ in range(rng.randint(1, 4))]
    header = [rng.choice(["instructions", "Instruction", "prompt"]), "output"]
    return Case("bad_column_mappings", f"bad_column_mappings_{i}.csv",
                _csv(header, [[r["instruction"], r["output"]] for r in rows]), line=2, field="instruction",
                good=[], bad=len(rows))


def _classification(rng: random.Random) -> tuple[dict, tuple]:
    text, pair = _text(rng), (_text(rng) if rng.random() < 0.3 else None)
    label = rng.choice(["positive", "negative", 3, 0.5, ["sports", "world"]])
    row = {"text": text, "label": label, **({"text_pair": pair} if pair else {})}
    shown = ", ".join(label) if isinstance(label, list) else str(label)
    return row, (("user", text, pair), ("assistant", shown, None))


BAD_LABELS = [(True, "a boolean"), (None, "null"), ({"a": 1}, "an object"), ([], "empty"), ("  ", "empty"),
              (["a", 2], "every name"), (["a,b"], "every name")]


def broken_classification(rng, i):
    """classification rows: missing or empty text, a pair that is not text, labels of no usable kind."""
    row, _ = _classification(rng)
    choice = i % 4
    if choice == 0:
        row["label"], _ = rng.choice(BAD_LABELS)
        field = "label"
    elif choice == 1:
        if rng.random() < 0.5:
            del row["text"]
        else:
            row["text"] = rng.choice(["", " ", 7, ["x"]])
        field = "text"
    elif choice == 2:
        row["text_pair"], field = rng.choice([5, ["a"], {"b": 1}, True]), "text_pair"
    else:
        del row["label"]
        field = "label"
    writer, ext = rng.choice([(_jsonl, "jsonl"), (_json, "json")])
    return _mixed(rng, "broken_classification", i, [(row, field)], good=_classification, writer=writer, ext=ext,
                  source={"format": "classification"})


QUESTION = "Is it big?"


def _tabular(rng: random.Random) -> tuple[dict, tuple]:
    """A table row of 1-3 features (plain words and whole numbers: written as they are) and its target."""
    features = {name: rng.choice([rng.randint(0, 999), rng.choice(["red", "blue", "tall", "x y"])])
                for name in rng.sample(["size", "colour", "height", "rooms"], rng.randint(1, 3))}
    target = rng.choice(["Yes", "No"])
    # expectations written here, not by the serializer: "The <name> is <value>." then the question
    prompt = " ".join(f"The {k} is {v}." for k, v in features.items()) + f"\n\n{QUESTION}"
    return {**features, "label": target}, (("user", prompt, None), ("assistant", target, None))


def broken_tabular(rng, i):
    """tabular rows: the target missing, null or blank, a list or object where a value belongs."""
    row, _ = _tabular(rng)
    choice = i % 3
    if choice == 0:
        if rng.random() < 0.5:
            del row["label"]
        else:
            row["label"] = rng.choice([None, "", "   "])
        field = "label"
    elif choice == 1:
        row["label"], field = rng.choice([[1, 2], {"a": "b"}]), "label"
    else:
        field = next(iter(k for k in row if k != "label"))
        row[field] = rng.choice([[1], {"x": 2}, ["a", "b"]])
    return _mixed(rng, "broken_tabular", i, [(row, field)], good=_tabular,
                  source={"format": "tabular", "tabular": {"target": "label", "question": QUESTION}})


# ---------------------------------------------------------------- preference formats

def _turn_sig(role, content):
    return ((role, content, None),)


def _preference(rng):
    """A good preference row: prompt and answers as strings or message lists."""
    p, c, r = _text(rng), _text(rng), _text(rng) + " (worse)"
    listed = rng.random() < 0.4
    row = {"prompt": [{"role": "user", "content": p}] if listed else p,
           "chosen": [{"role": "assistant", "content": c}] if listed else c, "rejected": r}
    return row, (_turn_sig("user", p), (_turn_sig("assistant", c), _turn_sig("assistant", r)), None)


def _ranked(rng):
    p = _text(rng)
    answers = [f"{_text(rng)} #{k}" for k in range(rng.randint(2, 4))]
    sigs = [(_turn_sig("user", p), (_turn_sig("assistant", answers[a]), _turn_sig("assistant", answers[b])), None)
            for a in range(len(answers)) for b in range(a + 1, len(answers))]
    return {"prompt": p, "responses": answers}, sigs


def _unpaired(rng):
    p, c, label = _text(rng), _text(rng), rng.random() < 0.5
    return {"prompt": p, "completion": c, "label": label}, (_turn_sig("user", p), (_turn_sig("assistant", c),), label)


PREFERENCE_GOOD = {"preference": _preference, "ranked": _ranked, "unpaired": _unpaired}


def preference_fields(rng, i):
    """preference/ranked/unpaired rows with a field missing, empty, of the wrong type, or a bad label."""
    fmt = ("preference", "ranked", "unpaired")[i % 3]
    row, _ = PREFERENCE_GOOD[fmt](rng)
    col = rng.choice(list(row))
    pick = rng.randrange(3)
    if col == "label":
        if pick == 0:
            del row[col]
        else:
            row[col] = rng.choice(["true", 1, 0, None, "no", [True]])
    elif col == "responses":
        row[col], col = rng.choice([("a", col), ([], col), (["only one"], col), (["ok", 5], f"{col}[1]"),
                                    (["ok", "  "], f"{col}[1]")])
    else:
        _break_text(rng, row, col, pick)
    return _one_bad_row(rng, "preference_fields", i, row, col, PREFERENCE_GOOD[fmt], fmt)


def _break_text(rng, row: dict, col: str, pick: int) -> None:
    """A required text field missing (pick 0), blank or null (1), or not a string (2)."""
    if pick == 0:
        del row[col]
    elif pick == 1:
        row[col] = rng.choice(["", "   ", None])
    else:
        row[col] = rng.choice(WRONG[:4] + [{"a": "b"}])


def _one_bad_row(rng, kind: str, i: int, row: dict, col: str, good, fmt: str) -> Case:
    """`row` (broken at `col`) among good rows of `fmt`, in a jsonl or json file."""
    writer, ext = rng.choice([(_jsonl, "jsonl"), (_json, "json")])
    return _mixed(rng, kind, i, [(row, col)], good=good, source={"format": fmt}, writer=writer, ext=ext)


def preference_turns(rng, i):
    """Message-list prompts and answers with bad roles: an unknown role, a user turn as the answer, a
    prompt ending with the assistant, a system turn out of place, a turn that is not an object."""
    fmt = ("preference", "unpaired")[i % 2]
    row, _ = PREFERENCE_GOOD[fmt](rng)
    answer = "chosen" if fmt == "preference" else "completion"
    choice = rng.randrange(5)
    if choice == 0:
        row["prompt"], where = [{"role": rng.choice(["bot", "USER", 3, ""]), "content": "q"}], "prompt[0].role"
    elif choice == 1:
        row[answer], where = [{"role": "user", "content": "a"}], f"{answer}[0].role"
    elif choice == 2:
        row["prompt"] = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        where = "prompt[1].role"
    elif choice == 3:
        row["prompt"] = [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                         {"role": "user", "content": "q"}]
        where = "prompt[1].role"
    else:
        row[answer], where = [rng.choice(["text", 5, None])], f"{answer}[0]"
    return _mixed(rng, "preference_turns", i, [(row, where)], good=PREFERENCE_GOOD[fmt], source={"format": fmt})


# ---------------------------------------------------------------- text pairs (the contrastive objective)

def _pairs(rng):
    """A good pairs row: anchor, positive and, in some rows, a hard negative."""
    texts = [_text(rng), _text(rng)] + ([_text(rng)] if rng.random() < 0.5 else [])
    row = dict(zip(("anchor", "positive", "negative"), texts))
    return row, tuple(("segment", t, k > 0) for k, t in enumerate(texts))


def broken_pairs(rng, i):
    """pairs rows with the anchor or positive missing, blank or not a string, or a negative that is
    not a string (a null or blank negative is a row without one: good)."""
    row, _ = _pairs(rng)
    col = rng.choice(["anchor", "positive", "negative"])
    pick = rng.randrange(3)
    if col == "negative":
        row[col] = rng.choice(WRONG[:4] + [{"a": "b"}, ["x"]])
    else:
        _break_text(rng, row, col, pick)
    return _one_bad_row(rng, "broken_pairs", i, row, col, _pairs, "pairs")


CLASSES = {f.__name__: f for f in (broken_json, broken_csv, broken_parquet, wrong_types, missing_or_empty,
                                   huge_rows, invalid_utf8, empty_files, bad_roles, bad_column_mappings,
                                   broken_classification, broken_tabular, preference_fields,
                                   preference_turns, broken_pairs)}


def all_cases(per_class: int, seed: int = 7) -> list[Case]:
    """`per_class` cases of every class, the same for a seed."""
    rng = random.Random(seed)
    return [make(rng, i) for make in CLASSES.values() for i in range(per_class)]
