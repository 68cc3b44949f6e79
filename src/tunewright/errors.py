"""User-facing errors: one line, `file:line: field: reason`, exit code 2, never a traceback."""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["TunewrightError", "DataError", "ConfigError", "Interrupted", "located", "shown", "clipped"]


class TunewrightError(Exception):
    """An error caused by the user's input. The CLI prints `str(err)` on one line and exits 2."""

    exit_code = 2


class ConfigError(TunewrightError):
    """A config key is unknown, mistyped, out of range or not supported yet."""


class DataError(TunewrightError):
    """A data file or row is malformed. Carries the location so callers can count or skip it."""

    def __init__(self, file: str, line: int | None, field: str | None, reason: str):
        self.file, self.line, self.field, self.reason = file, line, field, reason
        super().__init__(located(file, line, field, reason))


class Interrupted(BaseException):
    """Leave now: a second stop signal during training, or SIGTERM outside it. A BaseException, like
    KeyboardInterrupt, so no `except Exception` on the way out swallows it; `finally` blocks still
    run (logs are flushed). The CLI prints one line and exits 128 + the signal number."""

    def __init__(self, signum: int):
        import signal
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def located(file: str, line: int | None, field: str | None, reason: str) -> str:
    """Format `file:line: field: reason`, leaving out the parts that are unknown."""
    where = f"{file}:{line}" if line is not None else str(file)
    reason = " ".join(str(reason).split())  # one line, whatever the reason contained
    return f"{where}: {field}: {reason}" if field else f"{where}: {reason}"


def shown(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to about `limit` characters, without building the whole repr first (a huge
    or deeply nested value is echoed in an error, never expanded)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    short.maxlevel = 3
    return clipped(short.repr(value), limit)


def clipped(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters with `...`: a key or message that echoes a huge value."""
    return text if len(text) <= limit else text[:limit - 3] + "..."
