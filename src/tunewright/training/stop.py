"""Stop requests: what SIGTERM and SIGINT do to a run, and how long work notices one.

    first signal   the run stops at the next step boundary: a step in progress finishes, an
                   evaluation in progress is abandoned (generation checks between tokens, loss and
                   label scoring between batches), a checkpoint of the last finished step is saved,
                   and `tunewright train` exits 130 (SIGINT) or 143 (SIGTERM)
    second signal  `Interrupted` is raised at once; logs are flushed on the way out (every
                   metrics line is already complete on disk), nothing more is saved

A container runtime sends SIGTERM and kills ~30 s later, so work that can run longer than a
second or two (generation over hundreds of rows) polls `requested()`; the flag is process-wide
because signals are.
"""

from __future__ import annotations

import signal

from tunewright.errors import Interrupted

__all__ = ["StopRequested", "listen", "requested", "check", "clear"]

_received: list[int] = []  # signal numbers received while listening, in order


class StopRequested(Exception):
    """Raised by long evaluations when a stop was asked for: the loop abandons the evaluation and
    stops at the step boundary it already reached."""


def requested() -> int | None:
    """The first stop signal received while listening, or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise StopRequested when a stop was asked for (called between batches or tokens)."""
    if _received:
        raise StopRequested(f"stop requested by {signal.Signals(_received[0]).name}")


def clear() -> None:
    _received.clear()


def _handle(signum, frame) -> None:
    _received.append(signum)
    if len(_received) > 1:  # the second signal: the user will not wait for the step boundary
        raise Interrupted(signum)


class listen:
    """While active, SIGTERM/SIGINT request a stop instead of killing the process (main thread only:
    Python delivers signals there, and elsewhere `signal.signal` raises)."""

    def __enter__(self):
        clear()
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, _handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
