"""Control signals: handlers for start, stop, reboot and failover.

A control signal on ``system-control`` names a ``target`` agent, or a
``group`` (then every agent of the group gets it). An agent registers
handlers per signal with a :class:`ControlRouter`; the router calls those of
signals addressed to it, once per event id. Role changes (``elected``,
``revoked``, ``resigned``, ``expired``) share the topic and are not
commands; the router leaves them alone.

``failover`` makes the group's current leader resign
(:func:`resign_on_failover`): it stops its work, writes a Release, and the
next candidate claims the term at once. :func:`request_failover` sends the
signal and measures the handover on the requester's monotonic clock by
folding the lease log: from sending the signal to reading the release, and
to reading the next leader's winning claim.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from .elector import Elector
from .errors import ConfigError, TransportError
from .events import ROLE_SIGNALS, ControlSignal, Event
from .headers import EventMeta
from .lease import LeaseState
from .log import Log

logger = logging.getLogger(__name__)

Command = Literal["start", "stop", "reboot", "failover"]
COMMANDS: tuple[Command, ...] = ("start", "stop", "reboot", "failover")
ControlHandler = Callable[[ControlSignal, EventMeta | None], object]


class Sender(Protocol):
    """Where a control signal goes: a :class:`~nccoord.bus.Publisher`."""

    def publish(
        self, event: Event, chain_id: str | None = None, *, wait: bool = False
    ) -> object: ...


class ControlRouter:
    """Calls an agent's handlers for the commands addressed to it."""

    def __init__(self, agent: str, group: str | None = None, remember: int = 4096):
        self.agent = agent
        self.group = group
        self._handlers: dict[str, list[ControlHandler]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def on(self, signal: Command, handler: ControlHandler) -> None:
        """Call ``handler(signal_event, meta)`` for each ``signal`` addressed here."""
        if signal not in COMMANDS:
            raise ConfigError(f"signal: {signal!r} is not one of {COMMANDS}")
        self._handlers.setdefault(signal, []).append(handler)

    def addressed(self, event: ControlSignal) -> bool:
        """True if the command names this agent, or (with no target) its group."""
        if event.target is not None:
            return event.target == self.agent
        return event.group is not None and event.group == self.group

    def dispatch(self, event: ControlSignal, meta: EventMeta | None = None) -> int:
        """Call the handlers of one signal read; return how many were called."""
        if event.signal in ROLE_SIGNALS or not self.addressed(event):
            return 0
        if meta is not None:
            if meta.id in self._seen:
                logger.debug("control %s %s seen before", event.signal, meta.id)
                return 0
            self._seen[meta.id] = None
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        handlers = self._handlers.get(event.signal, [])
        logger.info(
            "agent %s: control %s (%s), %d handlers",
            self.agent,
            event.signal,
            event.reason or "-",
            len(handlers),
        )
        for handler in handlers:
            handler(event, meta)
        return len(handlers)


def resign_on_failover(elector: Elector) -> ControlHandler:
    """A ``failover`` handler: the leader resigns, anyone else does nothing."""

    def handle(event: ControlSignal, meta: EventMeta | None) -> None:
        term = elector.term
        if term is None:
            return
        logger.info(
            "group %s: %s resigns term %d on failover (%s)",
            elector.group,
            elector.candidate_id,
            term,
            event.reason or "-",
        )
        elector.resign()

    return handle


def failover_signal(
    group: str, reason: str | None = None, target: str | None = None
) -> ControlSignal:
    """The ``failover`` command for a group (or one agent of it)."""
    return ControlSignal(
        signal="failover",
        timestamp=datetime.now(UTC),
        group=group,
        target=target,
        reason=reason,
    )


@dataclass(frozen=True)
class Handover:
    """A failover as the requester measured it (seconds from sending)."""

    group: str
    old_leader: str | None
    old_term: int
    new_leader: str
    new_term: int
    released_after: float | None
    elected_after: float


def request_failover(
    publisher: Sender,
    log: Log,
    group: str,
    *,
    timeout: float = 30.0,
    reason: str = "requested",
) -> Handover:
    """Ask the group's leader to resign; return once the next leader is known.

    ``log`` is the group's lease log (:class:`~nccoord.kafka_log.KafkaLog`
    on ``system-lease``). Raises :class:`~nccoord.errors.TransportError` if
    no new leader is read within ``timeout`` seconds.
    """
    seen: list[tuple[float, LeaseState]] = []
    changed = threading.Condition()

    def on_change(_before: LeaseState | None, after: LeaseState) -> None:
        with changed:
            seen.append((time.monotonic(), after))
            changed.notify_all()

    observer = Elector(log, group, "failover-observer", participate=False)
    observer.on_change(on_change)
    observer.start()
    try:
        deadline = time.monotonic() + timeout
        _wait(lambda: observer.caught_up, deadline, changed)
        with changed:
            before = seen[-1][1] if seen else None
            mark = len(seen)
        old_term = before.term if before is not None else 0
        old_leader = before.holder if before is not None else None
        sent = time.monotonic()
        publisher.publish(failover_signal(group, reason), wait=True)
        logger.info("group %s: failover of term %d requested", group, old_term)

        def elected() -> bool:
            return any(s.term > old_term and s.holder for _, s in seen[mark:])

        _wait(elected, deadline, changed)
        with changed:
            after = seen[mark:]
    finally:
        observer.close()
    released = next((t for t, s in after if s.holder is None), None)
    at, state = next((t, s) for t, s in after if s.term > old_term and s.holder)
    assert state.holder is not None
    return Handover(
        group,
        old_leader,
        old_term,
        state.holder,
        state.term,
        None if released is None else released - sent,
        at - sent,
    )


def _wait(
    done: Callable[[], bool], deadline: float, changed: threading.Condition
) -> None:
    with changed:
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError("no handover read from the lease log in time")
            changed.wait(min(left, 0.05))
