"""Time-bound overrides: the agent's book of what is in force, and supervisors.

An override for a target applies from its ``timestamp`` for
``override.durationSeconds`` and ends then, or earlier when a revoke naming
its id is read. The agent-side :class:`OverrideBook` is a pure fold: the
overrides and revokes read, each with the wall-clock time ``now`` it was
read at, give what is in force for a target at any later ``now``. Overrides
are wall-clock by nature (the issuer says from when and for how long), so
the book compares the issuer's timestamps with the agent's wall clock; keep
clocks synchronised to well under the shortest duration.

Rules of the book:

- an override is known by its ``overrideId``, else by its event id;
- one that has already expired when it arrives is never applied;
- one that arrives again (same id) changes nothing, nor does one whose
  revoke arrived first;
- a revoke ends the override at once; revoking twice changes nothing;
- with a :class:`~nccoord.signing.Verifier`, unsigned, forged, tampered and
  replayed overrides and revokes are refused, and the reason is logged;
- for one target and override type, the override that started last is the
  one in force (:meth:`OverrideBook.value`).

A :class:`Supervisor` issues and revokes overrides, signed if given a
signer, and revokes on a condition over the status stream: a failure rate
(:class:`FailureRate`) or a drift (:class:`Drift`) over a threshold in a
window.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from .errors import ConfigError, SignatureError
from .events import (
    Event,
    Override,
    OverrideRevoke,
    OverrideSpec,
    Scalar,
    StatusUpdate,
)

if TYPE_CHECKING:
    from .signing import Signer, Verifier

logger = logging.getLogger(__name__)

WallClock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ActiveOverride:
    """An override the book holds, with the interval it applies in."""

    id: str
    target: str
    type: str
    value: Scalar
    starts: datetime
    ends: datetime
    issued_by: str | None = None

    def applies(self, now: datetime) -> bool:
        return self.starts <= now < self.ends


@dataclass(frozen=True)
class Outcome:
    """What the book did with one override or revoke.

    ``changed`` says whether what is in force changed (or will, for an
    override that starts later); ``reason`` says what happened, in words.
    """

    changed: bool
    reason: str
    id: str | None = None
    override: ActiveOverride | None = None


class OverrideBook:
    """The overrides in force for an agent: a fold over the override log."""

    def __init__(self, verifier: Verifier | None = None, remember: int = 100_000):
        self.verifier = verifier
        self._active: dict[str, ActiveOverride] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._remember = remember

    def offer(
        self, override: Override, now: datetime, event_id: str | None = None
    ) -> Outcome:
        """Fold an override read at wall time ``now``."""
        oid = override.override_id or event_id
        if oid is None:
            raise ConfigError("an override needs an overrideId or an event id")
        refused = self._refuse(override, now, oid)
        if refused is not None:
            return refused
        if oid in self._active:
            return Outcome(False, "duplicate", oid)
        if oid in self._ended:
            return Outcome(False, f"already ended ({self._ended[oid]})", oid)
        active = ActiveOverride(
            oid,
            override.target,
            override.override.type,
            override.override.new_value,
            override.timestamp,
            override.expires_at,
            override.issued_by,
        )
        if now >= active.ends:
            self._end(oid, "expired before it arrived")
            logger.info(
                "override %s for %s expired before it arrived", oid, active.target
            )
            return Outcome(False, "expired before it arrived", oid, active)
        self._active[oid] = active
        logger.info(
            "override %s for %s: %s=%r until %s",
            oid,
            active.target,
            active.type,
            active.value,
            active.ends.isoformat(),
        )
        return Outcome(True, "applied", oid, active)

    def revoke(self, revoke: OverrideRevoke, now: datetime) -> Outcome:
        """Fold a revoke read at wall time ``now``."""
        oid = revoke.override_id
        refused = self._refuse(revoke, now, oid)
        if refused is not None:
            return refused
        if oid in self._ended:
            return Outcome(False, f"already ended ({self._ended[oid]})", oid)
        active = self._active.pop(oid, None)
        self._end(oid, "revoked")
        if active is None:
            # Remembered, so the override arriving later is not applied.
            return Outcome(False, "revoked before it arrived", oid)
        logger.info(
            "override %s for %s revoked: %s", oid, active.target, revoke.reason or "-"
        )
        return Outcome(True, "revoked", oid, active)

    def expire(self, now: datetime) -> list[ActiveOverride]:
        """Drop the overrides that have run out by ``now``; return them."""
        done = [o for o in self._active.values() if now >= o.ends]
        for active in done:
            del self._active[active.id]
            self._end(active.id, "expired")
            logger.info("override %s for %s expired", active.id, active.target)
        return done

    def in_force(self, target: str, now: datetime) -> list[ActiveOverride]:
        """The overrides that apply to ``target`` at ``now``, oldest first."""
        found = [
            o for o in self._active.values() if o.target == target and o.applies(now)
        ]
        return sorted(found, key=lambda o: (o.starts, o.id))

    def value(
        self, target: str, type: str, now: datetime, default: Scalar = None
    ) -> Scalar:
        """The value of the newest override of ``type`` in force, else ``default``."""
        matching = [o for o in self.in_force(target, now) if o.type == type]
        return matching[-1].value if matching else default

    def ended(self, oid: str) -> str | None:
        """Why an override ended (``expired``, ``revoked``...), if it has."""
        return self._ended.get(oid)

    def _refuse(
        self, event: Override | OverrideRevoke, now: datetime, oid: str
    ) -> Outcome | None:
        if self.verifier is None:
            return None
        try:
            self.verifier.check(event, now)
        except SignatureError as exc:
            logger.warning(
                "refused %s %s for %s from %s: %s",
                event.KIND,
                oid,
                event.target,
                event.issued_by or "?",
                exc,
            )
            return Outcome(False, f"refused: {exc}", oid)
        return None

    def _end(self, oid: str, why: str) -> None:
        self._ended[oid] = why
        if len(self._ended) > self._remember:
            self._ended.popitem(last=False)


class Condition(Protocol):
    """A condition over status updates; ``observe`` returns a reason once met."""

    def observe(self, update: StatusUpdate) -> str | None: ...


@dataclass
class FailureRate:
    """Met when the share of failed plugin runs in a window exceeds a threshold.

    Counts ``plugin`` status updates (of ``plugin`` only, if set) whose
    timestamps lie within ``window`` seconds of the newest one read, and
    needs at least ``min_events`` of them.
    """

    threshold: float
    window: float = 60.0
    min_events: int = 5
    plugin: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 1:
            raise ConfigError("threshold: a failure rate in [0, 1)")
        self._runs: deque[tuple[datetime, bool]] = deque()

    def observe(self, update: StatusUpdate) -> str | None:
        if update.kind != "plugin" or update.success is None:
            return None
        if self.plugin is not None and update.plugin != self.plugin:
            return None
        self._runs.append((update.timestamp, update.success))
        newest = max(moment for moment, _ in self._runs)
        start = newest - timedelta(seconds=self.window)
        while self._runs and self._runs[0][0] < start:
            self._runs.popleft()
        total = len(self._runs)
        failed = sum(1 for _, success in self._runs if not success)
        if total >= self.min_events and failed / total > self.threshold:
            return (
                f"failure rate {failed}/{total} in {self.window:g}s "
                f"over {self.threshold:g}"
            )
        return None


@dataclass
class Drift:
    """Met when the mean of reported values in a window exceeds a threshold.

    Reads the numeric ``value`` of status updates of ``kind`` (``health``
    unless set), from ``agents`` only if given; the window is ``window``
    seconds back from the newest timestamp read.
    """

    threshold: float
    window: float = 60.0
    min_events: int = 1
    kind: str = "health"
    agents: frozenset[str] | None = None

    def __post_init__(self) -> None:
        self._values: deque[tuple[datetime, float]] = deque()

    def observe(self, update: StatusUpdate) -> str | None:
        value = update.value
        if update.kind != self.kind or isinstance(value, bool):
            return None
        if not isinstance(value, int | float):
            return None
        if self.agents is not None and update.agent_id not in self.agents:
            return None
        self._values.append((update.timestamp, float(value)))
        start = max(t for t, _ in self._values) - timedelta(seconds=self.window)
        while self._values and self._values[0][0] < start:
            self._values.popleft()
        mean = sum(v for _, v in self._values) / len(self._values)
        if len(self._values) >= self.min_events and abs(mean) > self.threshold:
            return f"drift {mean:g} in {self.window:g}s over {self.threshold:g}"
        return None


class Sink(Protocol):
    """Where a supervisor's events go: a :class:`~nccoord.bus.Publisher`."""

    def publish(self, event: Event, chain_id: str | None = None) -> object: ...


class Supervisor:
    """Issues and revokes overrides, and revokes them when a condition is met.

    Feed it the status stream with :meth:`observe` (for instance from a
    :class:`~nccoord.bus.Subscriber` handler for
    :class:`~nccoord.events.StatusUpdate`). Revokes carry the override's id
    as their causal chain id.
    """

    def __init__(
        self,
        sink: Sink,
        name: str,
        *,
        signer: Signer | None = None,
        clock: WallClock = utc_now,
    ) -> None:
        self.sink = sink
        self.name = name
        self.signer = signer
        self.clock = clock
        self._watches: dict[str, tuple[Override, Condition]] = {}

    def issue(
        self,
        target: str,
        type: str,
        new_value: Scalar,
        duration: float,
        *,
        override_id: str | None = None,
        start: datetime | None = None,
    ) -> Override:
        """Publish an override that applies from ``start`` (now) for ``duration``."""
        override = Override(
            target=target,
            timestamp=start or self.clock(),
            override=OverrideSpec(
                type=type, new_value=new_value, duration_seconds=duration
            ),
            override_id=override_id or uuid.uuid4().hex,
            issued_by=self.name,
        )
        if self.signer is not None:
            override = self.signer.sign(override)
        self.sink.publish(override, override.override_id)
        logger.info("issued override %s for %s", override.override_id, target)
        return override

    def revoke(self, override: Override, reason: str | None = None) -> OverrideRevoke:
        """Publish a revoke of ``override``."""
        assert override.override_id is not None
        revoke = OverrideRevoke(
            target=override.target,
            timestamp=self.clock(),
            override_id=override.override_id,
            reason=reason,
            issued_by=self.name,
        )
        if self.signer is not None:
            revoke = self.signer.sign(revoke)
        self.sink.publish(revoke, override.override_id)
        self._watches.pop(override.override_id, None)
        logger.info("revoked override %s: %s", override.override_id, reason or "-")
        return revoke

    def revoke_when(self, override: Override, condition: Condition) -> None:
        """Revoke ``override`` once ``condition`` is met by the status stream."""
        assert override.override_id is not None
        self._watches[override.override_id] = (override, condition)

    def observe(
        self, update: StatusUpdate, meta: object = None
    ) -> list[OverrideRevoke]:
        """Feed one status update; return the revokes it set off."""
        now = self.clock()
        fired = []
        for oid, (override, condition) in list(self._watches.items()):
            if now >= override.expires_at:
                del self._watches[oid]
                continue
            reason = condition.observe(update)
            if reason is not None:
                fired.append(self.revoke(override, reason))
        return fired

    @property
    def watching(self) -> list[str]:
        """The ids of overrides with a condition still being watched."""
        return list(self._watches)
