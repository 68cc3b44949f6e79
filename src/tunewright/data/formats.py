"""Row formats: one function per name users write in `data.datasets[].format`, turning a row dict
into an `Example` (a conversation, or raw segments with their train flags).

    alpaca             {instruction, input?, output, system?, history?}
                                                                -> [system?, earlier turns, user(+context), assistant]
    messages           {messages: [{role, content, train?}]}   -> the turns as given
    sharegpt           {conversations: [{from, value}]}         -> turns, `from` mapped to a role
    prompt_completion  {prompt, completion}: two strings        -> segments [prompt (no loss), completion]
                       or two message lists (TRL's conversational form) -> prompt turns + assistant turns
    text               {text}                                   -> one segment with loss everywhere
    classification     {text, text_pair?, label}                -> [user(text, context=text_pair), assistant(label)]
    tabular            any columns; `src.tabular` names the target -> [user(row as text + question),
                       (data/tabular.py)                            assistant(target)]

The classification and tabular rows are conversations too, so a causal LM learns them as replies (Yes/No
instruction tuning) and the classification objective reads the prompt and the label off the same rows.

Preference formats (read by the pair objectives dpo and kto; PAIRED lists them): the prompt is a
string (one user turn) or a message list, each response a string (one assistant turn) or a list of
assistant turns. The prompt becomes `messages`, the responses `responses`.

    preference         {prompt, chosen, rejected, margin?}      -> responses [chosen, rejected]; margin (a
                                                                   number: how much better chosen is) in meta
    ranked             {prompt, responses: [best, ..., worst]}  -> one preference example per ordered
                                                                   pair (i better than j): n(n-1)/2
    unpaired           {prompt, completion, label: true|false}  -> responses [completion], label (KTO)

Every function has the signature `(row, line, src) -> Example` and raises `DataError(src.path, line,
column, reason)`, naming the dataset's own column (after `src.columns` mapping) so the user can find
it. `src.columns` maps our field name to the dataset's column; `src.roles` adds role names.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from tunewright.data import tabular as tabular_rows
from tunewright.data.types import Example, Message, Segment
from tunewright.errors import ConfigError, DataError
from tunewright.registry import Registry, suggest

if TYPE_CHECKING:  # annotations only: the schema imports this package
    from tunewright.schema import DataSource

__all__ = ["FORMATS", "FIELDS", "ROLES", "SHAREGPT_ROLES", "PAIRED", "format_row", "label_text"]

Format = Callable[[dict, int, "DataSource"], Example]

ROLES = ("system", "user", "assistant")

# sharegpt's `from` values (and the plain role names, which some exports use) -> our roles.
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}

# The fields each format reads: the keys `src.columns` may map.
FIELDS = {
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
    "classification": ("text", "text_pair", "label"),
    "tabular": (),  # columns are named by `src.tabular` (target, features)
    "preference": ("prompt", "chosen", "rejected", "margin"),
    "ranked": ("prompt", "responses"),
    "unpaired": ("prompt", "completion", "label"),
}

# Formats whose rows are a prompt and responses to compare: only pair objectives read them (an
# objective with FORMATS = None reads every other format).
PAIRED = frozenset({"preference", "ranked", "unpaired"})


# ---------------------------------------------------------------- field access

def _columns(src: DataSource, fmt: str) -> dict[str, str]:
    """Check `src.columns` names only fields of `fmt` (a typo would otherwise be ignored)."""
    for ours in src.columns:
        if ours not in FIELDS[fmt]:
            raise ConfigError(f"{src.path}: columns: {fmt} has no field {ours!r}{suggest(ours, FIELDS[fmt])}; "
                              f"fields: {', '.join(FIELDS[fmt])}")
    return src.columns


def _role_map(src: DataSource, base: dict[str, str]) -> dict[str, str]:
    """`base` plus `src.roles`, whose targets must be our roles."""
    for name, role in src.roles.items():
        if role not in ROLES:
            raise ConfigError(f"{src.path}: roles: {name!r} maps to {role!r}{suggest(role, ROLES)}; "
                              f"roles: {', '.join(ROLES)}")
    return {**base, **src.roles}


def _value(row: dict, line: int, src: DataSource, cols: dict[str, str], field: str, required: bool = True):
    """`(column, value)` of our `field`; a missing required column is an error naming both names."""
    col = cols.get(field, field)
    if col in row:
        return col, row[col]
    if not required and field not in cols:
        return col, None
    have = ", ".join(map(str, row)) or "none"
    if col != field:
        reason = f"column {col!r} (mapped from {field}) is not in the row{suggest(col, row)}; columns: {have}"
    else:
        reason = f"missing{suggest(col, row)}; columns: {have} (map another with columns: {{{field}: <column>}})"
    raise DataError(src.path, line, col, reason)


def _text(row: dict, line: int, src: DataSource, cols: dict[str, str], field: str,
          required: bool = True) -> str | None:
    """A string field: required ones must be non-blank; optional ones may be absent, null or ''."""
    col, value = _value(row, line, src, cols, field, required)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise DataError(src.path, line, col, f"expected a string, got {_kind(value)}")
    if not value.strip():
        if required:
            raise DataError(src.path, line, col, "empty")
        return None
    return value


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _turns(items, line: int, src: DataSource, col: str, role_key: str, content_key: str,
           roles: dict[str, str], default_role: str | None = None) -> list[Message]:
    """Validate a list of turn dicts into Messages; errors name `col[i].key`.

    `train` (optional bool, null = unset) is kept per turn; `default_role` fills a missing role.
    """
    if not isinstance(items, list):
        raise DataError(src.path, line, col, f"expected a list of turns, got {_kind(items)}")
    if not items:
        raise DataError(src.path, line, col, "no turns")
    out = []
    for i, turn in enumerate(items):
        at = f"{col}[{i}]"
        if not isinstance(turn, dict):
            raise DataError(src.path, line, at,
                            f"expected an object with {role_key} and {content_key}, got {_kind(turn)}")
        name = turn.get(role_key, default_role)
        if name is None:
            raise DataError(src.path, line, f"{at}.{role_key}", "missing")
        role = roles.get(name) if isinstance(name, str) else None
        if role is None:
            raise DataError(src.path, line, f"{at}.{role_key}",
                            f"unknown role {name!r}{suggest(name, roles)}; known: {', '.join(roles)} "
                            "(add a name with roles: {<name>: <role>})")
        content = turn.get(content_key)
        if not isinstance(content, str):
            got = "missing" if content_key not in turn else f"expected a string, got {_kind(content)}"
            raise DataError(src.path, line, f"{at}.{content_key}", got)
        if role == "assistant" and not content.strip():
            raise DataError(src.path, line, f"{at}.{content_key}", "empty assistant reply")
        train = turn.get("train")
        if train is not None and not isinstance(train, bool):
            raise DataError(src.path, line, f"{at}.train", f"expected true or false, got {train!r}")
        out.append(Message(role=role, content=content, train=train))
    return out


def _conversation(messages: list[Message], line: int, src: DataSource, col: str, role_key: str) -> list[Message]:
    """A system turn only first, and at least one assistant turn to learn from."""
    for i, m in enumerate(messages):
        if m.role == "system" and i > 0:
            raise DataError(src.path, line, f"{col}[{i}].{role_key}", "a system turn may only come first")
    if not any(m.role == "assistant" for m in messages):
        raise DataError(src.path, line, col, "no assistant turn (nothing to train on)")
    return messages


# ---------------------------------------------------------------- the formats

def alpaca(row: dict, line: int, src: DataSource) -> Example:
    """Stanford Alpaca: instruction, optional input (kept as the user turn's context), output.

    Multi-round rows (the Chinese-Alpaca / LLaMA-Factory convention) carry the earlier rounds in
    `history: [[instruction, output], ...]`, oldest first: they become user/assistant turns before
    this one, and their outputs carry loss as `data.train_on_turns` says (default `all`: trained).
    """
    cols = _columns(src, "alpaca")
    instruction = _text(row, line, src, cols, "instruction")
    context = _text(row, line, src, cols, "input", required=False)
    output = _text(row, line, src, cols, "output")
    system = _text(row, line, src, cols, "system", required=False)
    messages = [Message("system", system)] if system else []
    messages += _history(row, line, src, cols)
    messages += [Message("user", instruction, context=context), Message("assistant", output)]
    return Example(source=src.path, line=line, messages=messages)


def _history(row: dict, line: int, src: DataSource, cols: dict[str, str]) -> list[Message]:
    """alpaca's optional `history`: [[instruction, output], ...] -> user and assistant turns."""
    col, value = _value(row, line, src, cols, "history", required=False)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(src.path, line, col, f"expected a list of [instruction, output] pairs, got {_kind(value)}")
    turns = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            got = f"{len(pair)} items" if isinstance(pair, list) else _kind(pair)
            raise DataError(src.path, line, f"{col}[{i}]", f"expected a pair [instruction, output], got {got}")
        for j, text in enumerate(pair):
            if not isinstance(text, str):
                raise DataError(src.path, line, f"{col}[{i}][{j}]", f"expected a string, got {_kind(text)}")
            if not text.strip():
                raise DataError(src.path, line, f"{col}[{i}][{j}]", "empty")
        turns += [Message("user", pair[0]), Message("assistant", pair[1])]
    return turns


def messages(row: dict, line: int, src: DataSource) -> Example:
    """OpenAI-style `messages`: [{role, content, train?}], roles renamed by `src.roles`."""
    cols = _columns(src, "messages")
    col, items = _value(row, line, src, cols, "messages")
    roles = _role_map(src, {r: r for r in ROLES})
    turns = _turns(items, line, src, col, "role", "content", roles)
    return Example(source=src.path, line=line, messages=_conversation(turns, line, src, col, "role"))


def sharegpt(row: dict, line: int, src: DataSource) -> Example:
    """ShareGPT `conversations`: [{from, value}], `from` mapped by SHAREGPT_ROLES plus `src.roles`."""
    cols = _columns(src, "sharegpt")
    col, items = _value(row, line, src, cols, "conversations")
    turns = _turns(items, line, src, col, "from", "value", _role_map(src, SHAREGPT_ROLES))
    return Example(source=src.path, line=line, messages=_conversation(turns, line, src, col, "from"))


def prompt_completion(row: dict, line: int, src: DataSource) -> Example:
    """Prompt and completion, both strings (loss on the completion only) or both message lists.

    Conversational form (TRL): the prompt's turns carry no loss unless they say `train: true`; the
    completion's turns are assistant turns (a missing role means assistant) that carry loss unless
    they say `train: false`.
    """
    cols = _columns(src, "prompt_completion")
    pcol, prompt = _value(row, line, src, cols, "prompt")
    ccol, completion = _value(row, line, src, cols, "completion")
    if isinstance(prompt, list) and isinstance(completion, list):
        roles = _role_map(src, {r: r for r in ROLES})
        head = _turns(prompt, line, src, pcol, "role", "content", roles)
        tail = _turns(completion, line, src, ccol, "role", "content", roles, default_role="assistant")
        for i, m in enumerate(tail):
            if m.role != "assistant":
                raise DataError(src.path, line, f"{ccol}[{i}].role",
                                f"completion turns must be assistant, got {m.role!r}")
        for m in head:
            m.train = bool(m.train)
        for m in tail:
            m.train = m.train is not False
        return Example(source=src.path, line=line, messages=_conversation(head + tail, line, src, pcol, "role"))
    if isinstance(prompt, list) != isinstance(completion, list):
        listed = pcol if isinstance(prompt, list) else ccol
        raise DataError(src.path, line, listed,
                        "a message list while the other field is not; give both as strings or both as message lists")
    p = _text(row, line, src, cols, "prompt")
    c = _text(row, line, src, cols, "completion")
    return Example(source=src.path, line=line, segments=[Segment(p, False), Segment(c, True)])


def text(row: dict, line: int, src: DataSource) -> Example:
    """Plain text for continued pretraining: loss on every token."""
    cols = _columns(src, "text")
    return Example(source=src.path, line=line, segments=[Segment(_text(row, line, src, cols, "text"), True)])


def classification(row: dict, line: int, src: DataSource) -> Example:
    """A text (and optional second text, e.g. a premise and a hypothesis) with its label: a class name,
    a number (a class id, or a regression target) or a list of class names (multi-label)."""
    cols = _columns(src, "classification")
    text_ = _text(row, line, src, cols, "text")
    pair = _text(row, line, src, cols, "text_pair", required=False)
    col, label = _value(row, line, src, cols, "label")
    return Example(source=src.path, line=line,
                   messages=[Message("user", text_, context=pair), Message("assistant", label_text(label, line, src, col))])


def label_text(label, line: int, src: DataSource, col: str) -> str:
    """A label as the reply text: a name as is, a number as written, several names joined by ", "."""
    if isinstance(label, str) and label.strip():
        return label.strip()
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        if not math.isfinite(label):
            raise DataError(src.path, line, col, f"{label!r} is not a finite number")
        return str(label)
    if isinstance(label, list) and label:
        if not all(isinstance(x, str) and x.strip() and "," not in x for x in label):
            raise DataError(src.path, line, col, "every name of a label list must be a non-empty string without ','")
        return ", ".join(x.strip() for x in label)
    what = "empty" if label == [] or (isinstance(label, str) and not label.strip()) else _kind(label)
    raise DataError(src.path, line, col, f"expected a class name, a number or a list of class names, got {what}")


def tabular(row: dict, line: int, src: DataSource) -> Example:
    """A table row: the features written as text (`src.tabular.serialization`) followed by the
    question, and the target as the reply. The target column never reaches the prompt."""
    prompt, target = tabular_rows.row_prompt(row, line, src)
    return Example(source=src.path, line=line, messages=[Message("user", prompt), Message("assistant", target)])


def _prompt(row: dict, line: int, src: DataSource, cols: dict[str, str]) -> list[Message]:
    """A string (one user turn) or a message list without assistant turn at its end."""
    col, value = _value(row, line, src, cols, "prompt")
    if isinstance(value, list):
        turns = _turns(value, line, src, col, "role", "content", _role_map(src, {r: r for r in ROLES}))
        for i, m in enumerate(turns):
            if m.role == "system" and i > 0:
                raise DataError(src.path, line, f"{col}[{i}].role", "a system turn may only come first")
        if turns[-1].role == "assistant":
            raise DataError(src.path, line, f"{col}[{len(turns) - 1}].role",
                            "the prompt ends with an assistant turn; the answers to compare go in the responses")
        for m in turns:
            m.train = False
        return turns
    return [Message("user", _text(row, line, src, cols, "prompt"), train=False)]


def _response(value, line: int, src: DataSource, col: str) -> list[Message]:
    """A string (one assistant turn) or a list of assistant turns (a missing role means assistant)."""
    if isinstance(value, list):
        turns = _turns(value, line, src, col, "role", "content", _role_map(src, {r: r for r in ROLES}),
                       default_role="assistant")
        for i, m in enumerate(turns):
            if m.role != "assistant":
                raise DataError(src.path, line, f"{col}[{i}].role", f"response turns must be assistant, got {m.role!r}")
            m.train = True
        return turns
    if not isinstance(value, str):
        raise DataError(src.path, line, col, f"expected a string or a list of assistant turns, got {_kind(value)}")
    if not value.strip():
        raise DataError(src.path, line, col, "empty")
    return [Message("assistant", value, train=True)]


def _field_response(row: dict, line: int, src: DataSource, cols: dict[str, str], field: str) -> list[Message]:
    col, value = _value(row, line, src, cols, field)
    return _response(value, line, src, col)


def preference(row: dict, line: int, src: DataSource) -> Example:
    """A prompt, the chosen and the rejected response."""
    cols = _columns(src, "preference")
    prompt = _prompt(row, line, src, cols)
    chosen, rejected = (_field_response(row, line, src, cols, f) for f in ("chosen", "rejected"))
    col, margin = _value(row, line, src, cols, "margin", required=False)
    meta = {}
    if margin is not None:  # the reward objective's -log σ(r_c - r_r - margin); others ignore it
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise DataError(src.path, line, col, f"expected a finite number, got {margin!r:.40}")
        meta["margin"] = float(margin)
    return Example(source=src.path, line=line, messages=prompt, responses=[chosen, rejected], meta=meta)


def ranked(row: dict, line: int, src: DataSource) -> list[Example]:
    """A prompt and its responses best first -> every ordered pair (the better one chosen)."""
    cols = _columns(src, "ranked")
    prompt = _prompt(row, line, src, cols)
    col, items = _value(row, line, src, cols, "responses")
    if not isinstance(items, list):
        raise DataError(src.path, line, col, f"expected a list of responses (best first), got {_kind(items)}")
    if len(items) < 2:
        raise DataError(src.path, line, col, f"{len(items)} response(s); ranking needs at least 2")
    answers = [_response(item, line, src, f"{col}[{i}]") for i, item in enumerate(items)]
    return [Example(source=src.path, line=line, messages=prompt, responses=[answers[i], answers[j]])
            for i in range(len(answers)) for j in range(i + 1, len(answers))]


def unpaired(row: dict, line: int, src: DataSource) -> Example:
    """A prompt, one completion and whether it is desirable (KTO's data)."""
    cols = _columns(src, "unpaired")
    prompt = _prompt(row, line, src, cols)
    completion = _field_response(row, line, src, cols, "completion")
    col, label = _value(row, line, src, cols, "label")
    if not isinstance(label, bool):
        raise DataError(src.path, line, col, f"expected true or false, got {label!r:.40}")
    return Example(source=src.path, line=line, messages=prompt, responses=[completion], label=label)


FORMATS: Registry[Format] = Registry("data format")
FORMATS.register("alpaca", alpaca)
FORMATS.register("messages", messages)
FORMATS.register("sharegpt", sharegpt)
FORMATS.register("prompt_completion", prompt_completion)
FORMATS.register("text", text)
FORMATS.register("classification", classification)
FORMATS.register("tabular", tabular)
FORMATS.register("preference", preference)
FORMATS.register("ranked", ranked)
FORMATS.register("unpaired", unpaired)


def format_row(row: dict, line: int, src: DataSource) -> Example | list[Example]:
    """Format one row with the format `src.format` names (ConfigError with did-you-mean if unknown);
    `ranked` gives a list (one example per pair)."""
    return FORMATS.get(src.format)(row, line, src)
