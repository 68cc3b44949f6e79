"""Stop requests: the first signal is recorded for the loop, the second leaves at once."""

import os
import signal

import pytest

from tunewright.errors import Interrupted
from tunewright.training import stop


def test_first_signal_requests_a_stop_second_raises():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as err:
        with stop.listen():
            assert stop.requested() is None
            stop.check()  # nothing asked yet
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested() == signal.SIGTERM
            with pytest.raises(stop.StopRequested):
                stop.check()
            os.kill(os.getpid(), signal.SIGINT)
    assert err.value.exit_code == 128 + signal.SIGINT
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored on the way out


def test_listening_starts_clear():
    with stop.listen():
        os.kill(os.getpid(), signal.SIGTERM)
    with stop.listen():
        assert stop.requested() is None
