"""The visit cadence of `stampflow replay` (--visit-size N --visit-interval S): its validation, without a broker.
The bursts themselves are timed on the real broker in tests/integration/test_rubin_stream.py."""
from __future__ import annotations

import pytest

from schemas.errors import StampflowError
from stream.config import Settings
from stream.replay import VisitCadence, replay_messages


def test_cadence_from_the_command_line_values():
    assert VisitCadence.of(None, None) is None
    assert VisitCadence.of(40000, 34) == VisitCadence(40000, 34.0)
    assert VisitCadence.of("10", "0.5") == VisitCadence(10, 0.5)


@pytest.mark.parametrize("size, interval, rate, error", [
    (10, None, None, "--visit-size and --visit-interval go together"),
    (None, 34, None, "--visit-size and --visit-interval go together"),
    (10, 34, 100.0, "two different pacings"),
    (0, 34, None, "--visit-size must be at least 1"),
    (10, 0, None, "--visit-interval must be positive"),
    (10, -1, None, "--visit-interval must be positive"),
])
def test_cadence_mistakes_are_one_line_errors(size, interval, rate, error):
    with pytest.raises(StampflowError, match=error) as info:
        VisitCadence.of(size, interval, rate)
    assert "\n" not in str(info.value)


def test_replay_refuses_rate_and_cadence_before_touching_a_broker():
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:1"})  # nothing listens: never reached
    with pytest.raises(StampflowError, match="two different pacings"):
        replay_messages(settings, iter([]), "t", rate=10.0, visit=VisitCadence(5, 1.0), progress=False)
