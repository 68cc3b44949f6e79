"""The shapes data takes between the stages of the pipeline.

    file rows (dict) --formats--> Example --templates--> segments --tokenize--> Encoded
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Message", "Segment", "Example", "Encoded", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # label value the loss skips (PyTorch's cross_entropy default)


@dataclass
class Message:
    """One turn of a conversation. `train=None` leaves the choice to `data.train_on_turns`."""

    role: str  # "system" | "user" | "assistant"
    content: str
    train: bool | None = None
    context: str | None = None  # alpaca's `input` field, kept apart so the alpaca template can place it


@dataclass
class Segment:
    """A piece of rendered text and whether its tokens carry loss."""

    text: str
    train: bool


@dataclass
class Example:
    """One formatted row: a conversation (rendered by the template) or raw segments (used as is)."""

    source: str  # file or dataset name, for error messages
    line: int  # 1-based line (jsonl) or row number
    messages: list[Message] | None = None
    segments: list[Segment] | None = None
    meta: dict = field(default_factory=dict)  # how the row was phrased (data/phrasings.py), copied to Encoded.meta
    # preference formats (data/formats.py): `messages` is the prompt, each response its own turns
    # (preference: [chosen, rejected]; unpaired: [completion] with `label` true = desirable)
    responses: list[list[Message]] | None = None
    label: bool | None = None


@dataclass
class Encoded:
    """Token ids and labels (IGNORE_INDEX where no loss) of one example."""

    input_ids: list[int]
    labels: list[int]
    source: str = ""
    line: int = 0
    meta: dict = field(default_factory=dict)
