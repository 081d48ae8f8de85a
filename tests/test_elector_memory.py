"""The threaded elector over the in-memory log: misuse and failing callbacks."""

from __future__ import annotations

import math
import threading
import time

import pytest

from nccoord.candidate import Timing
from nccoord.elector import Elector
from nccoord.errors import ConfigError, NccoordError
from nccoord.log import MemoryLog


def test_a_failing_callback_does_not_stop_the_election() -> None:
    elected = threading.Event()

    def broken(term: int) -> None:
        elected.set()
        raise RuntimeError("application bug")

    elector = Elector(MemoryLog(), "g", "a", timing=Timing(lease=0.5))
    elector.on_elected(broken)
    elector.start()
    try:
        assert elected.wait(5)
        time.sleep(1.5)  # three leases: renewals went on after the failure
        assert elector.error is None
        assert elector.is_leader()
    finally:
        elector.close()


@pytest.mark.parametrize("group", ["", "  ", None])
def test_an_elector_needs_a_group_name(group: object) -> None:
    with pytest.raises(ConfigError, match="group"):
        Elector(MemoryLog(), group, "a")  # type: ignore[arg-type]


def test_an_elector_runs_once() -> None:
    elector = Elector(MemoryLog(), "g", "a")
    elector.start()
    elector.close()
    with pytest.raises(NccoordError, match="runs once"):
        elector.start()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"lease": math.nan}, "lease"),
        ({"lease": math.inf}, "lease"),
        ({"lease": True}, "lease"),
        ({"lease": 0}, "lease"),
        ({"drift": 1.5}, "drift"),
        ({"margin": -1}, "margin"),
        ({"lease": 2, "margin": 5}, "margin"),
        ({"lease": 2, "renew_every": 3}, "renew_every"),
    ],
)
def test_timing_names_the_setting_it_refuses(
    settings: dict[str, float], field: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{field}:"):
        Timing(**settings)
