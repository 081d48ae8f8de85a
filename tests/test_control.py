"""Control signals: routing to handlers, and failover by resign (section 5)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from nccoord.candidate import Timing
from nccoord.control import (
    COMMANDS,
    ControlRouter,
    failover_signal,
    request_failover,
    resign_on_failover,
)
from nccoord.elector import Elector
from nccoord.errors import ConfigError
from nccoord.events import ControlSignal, Event, Signal
from nccoord.headers import EventMeta
from nccoord.log import MemoryLog

NOW = datetime(2025, 7, 26, tzinfo=UTC)


def meta(event_id: str) -> EventMeta:
    return EventMeta(event_id, "nccoord.control.v1", "/test", NOW)


def command(
    signal: Signal, target: str | None = None, group: str | None = None
) -> ControlSignal:
    return ControlSignal(signal=signal, timestamp=NOW, target=target, group=group)


def test_handlers_get_the_commands_addressed_to_the_agent_or_its_group() -> None:
    router = ControlRouter("a1", "g")
    calls: list[str] = []
    for signal in COMMANDS[:3]:
        router.on(signal, lambda e, m: calls.append(e.signal))
    assert router.dispatch(command("stop", target="a1"), meta("1")) == 1
    assert router.dispatch(command("reboot", group="g"), meta("2")) == 1
    assert router.dispatch(command("start", target="a2", group="g"), meta("3")) == 0
    assert router.dispatch(command("start", group="other"), meta("4")) == 0
    assert calls == ["stop", "reboot"]


def test_a_command_read_twice_is_handled_once() -> None:
    router = ControlRouter("a1", "g")
    calls: list[str] = []
    router.on("reboot", lambda e, m: calls.append(m.id if m else "-"))
    router.dispatch(command("reboot", target="a1"), meta("x"))
    router.dispatch(command("reboot", target="a1"), meta("x"))
    assert calls == ["x"]


def test_role_changes_are_not_commands() -> None:
    router = ControlRouter("a1", "g")
    router.on("failover", lambda e, m: pytest.fail("called"))
    role = ControlSignal(
        signal="elected", timestamp=NOW, group="g", agent_id="a1", term=3
    )
    assert router.dispatch(role, meta("r")) == 0


def test_unknown_signals_cannot_be_handled() -> None:
    with pytest.raises(ConfigError, match="signal"):
        ControlRouter("a1").on("elected", lambda e, m: None)  # type: ignore[arg-type]


class Relay:
    """Stands in for the bus: a published signal reaches every agent's router."""

    def __init__(self, routers: list[ControlRouter]) -> None:
        self.routers = routers
        self.sent: list[Event] = []

    def publish(
        self, event: Event, chain_id: str | None = None, *, wait: bool = False
    ) -> object:
        self.sent.append(event)
        assert isinstance(event, ControlSignal)
        for router in self.routers:
            router.dispatch(event, meta(str(len(self.sent))))
        return None


def test_failover_makes_the_leader_resign_and_the_next_take_over_at_once() -> None:
    log = MemoryLog()
    timing = Timing(lease=2.0)
    electors = [Elector(log, "g", name, timing=timing) for name in ("a", "b")]
    routers = []
    for elector in electors:
        router = ControlRouter(elector.candidate_id, "g")
        router.on("failover", resign_on_failover(elector))
        routers.append(router)
        elector.start()
    try:
        deadline = time.monotonic() + 10
        while not any(e.is_leader() for e in electors):
            assert time.monotonic() < deadline, "nobody was elected"
            time.sleep(0.01)
        leader = next(e for e in electors if e.is_leader())
        term = leader.term
        assert term is not None
        handover = request_failover(Relay(routers), log, "g", timeout=10)
    finally:
        for elector in electors:
            elector.close()
    assert handover.old_leader == leader.candidate_id
    assert handover.old_term == term
    assert handover.new_leader != leader.candidate_id
    assert handover.new_term == term + 1
    assert handover.released_after is not None
    # The release lets the next candidate claim at once: well within a lease,
    # where an expiry would take longer than the lease.
    assert handover.elected_after < timing.lease
    assert handover.released_after <= handover.elected_after


def test_failover_signal_names_the_group() -> None:
    signal = failover_signal("g", "maintenance")
    assert (signal.signal, signal.group, signal.target) == ("failover", "g", None)
