"""Role changes: published on ``system-control``, derivable from the log.

The new leader publishes both sides of a change (``revoked`` for whoever held
the term before, ``elected`` for itself), so a change is announced once, not
once per agent; a leader that resigns or expires announces that itself while
it still can. Any observer can derive the same changes by folding the lease
log (:func:`derive`), and :func:`observe` tells the current leader and term
without taking part.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from .bus import Publisher
from .elector import Elector, Leadership, RoleChange
from .errors import TransportError
from .events import ControlSignal
from .lease import LeaseState
from .log import Log

logger = logging.getLogger(__name__)


def to_event(change: RoleChange, now: datetime | None = None) -> ControlSignal:
    """The ``system-control`` event of a role change.

    The timestamp is informational (wall clock); no decision reads it.
    """
    return ControlSignal(
        signal=change.kind,  # type: ignore[arg-type]
        timestamp=now or datetime.now(UTC),
        group=change.group,
        agent_id=change.agent,
        term=change.term,
        reason=change.reason or None,
    )


class RolePublisher:
    """A role-change hook for :class:`Elector` that publishes each change."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def __call__(self, change: RoleChange) -> None:
        self.publisher.publish(to_event(change))


def derive(
    group: str, before: LeaseState | None, after: LeaseState
) -> list[RoleChange]:
    """The role changes one step of the fold shows, as an observer sees them.

    A new term with a holder is an election; the previous holder, if any, was
    revoked. A term left without holder was resigned (released).
    """
    changes: list[RoleChange] = []
    if before is None or before == after:
        return changes
    if after.term != before.term and after.holder is not None:
        if before.holder is not None:
            changes.append(RoleChange("revoked", group, before.holder, before.term))
        changes.append(RoleChange("elected", group, after.holder, after.term))
    elif after.holder is None and before.holder is not None:
        changes.append(RoleChange("resigned", group, before.holder, before.term))
    return changes


def observe(log: Log, group: str, timeout: float = 10.0) -> Leadership:
    """Read the group's lease log to its end and tell who leads.

    The answer is what the log shows: the holder of the latest term, or
    ``leader=None`` if it was released or never claimed. It does not know
    whether the holder's lease has run out since its last record.
    """
    observer = Elector(log, group, "observer", participate=False)
    observer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if observer.caught_up:
                # A trimmed log with no record of the group: nobody holds it.
                return observer.leadership() or Leadership(group, 0, None)
            time.sleep(0.02)
    finally:
        observer.close()
    raise TransportError(f"could not read the lease log of {group} in {timeout}s")
