"""Registries: the names users write in YAML (`method.name`, `objective.name`, `data.format`)
mapped to implementations, with "did you mean" on a typo."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Generic, Iterator, TypeVar

from tunewright.errors import ConfigError

__all__ = ["Registry", "Configs", "suggest"]

T = TypeVar("T")


def suggest(name: str, choices) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class Registry(Generic[T]):
    """A named table of implementations of one family (methods, objectives, formats)."""

    def __init__(self, family: str):
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.family} {name!r} registered twice")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Remove `name` (a test's stand-in member, once the test is done)."""
        del self._items[name]

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.family} {name!r}{suggest(name, self._items)}; known: {known}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class Configs(Mapping):
    """name -> Config of every member of `registry` (plus `extra` config-only members such as
    objective `auto`), read live: a member a plug-in registers later appears here at once."""

    def __init__(self, registry: Registry, extra: dict | None = None):
        self.registry, self.extra = registry, dict(extra or {})

    def __getitem__(self, name: str):
        if name in self.extra:
            return self.extra[name]
        if name not in self.registry:
            raise KeyError(name)
        return self.registry.get(name).Config

    def __iter__(self) -> Iterator[str]:
        return iter([*self.extra, *self.registry.names()])

    def __len__(self) -> int:
        return len(self.extra) + len(self.registry.names())
