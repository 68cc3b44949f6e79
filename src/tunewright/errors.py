"""User-facing errors: one line, `file:line: field: reason`, exit code 2, never a traceback."""

from __future__ import annotations

__all__ = ["TunewrightError", "DataError", "ConfigError", "Interrupted", "located"]


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
