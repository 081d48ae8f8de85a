"""Membership from heartbeats: alive, suspect, dead, without I/O.

Every agent folds the heartbeats and registrations it reads, with the
reading of its own monotonic clock when it read them, into a
:class:`Membership`. An agent is

- ``alive`` from its first heartbeat until ``suspect_after`` heartbeat
  intervals pass without one,
- ``suspect`` from then until ``dead_after`` intervals have passed,
- ``dead`` from then until its next heartbeat makes it ``alive`` again.

The interval is the one the agent advertises in its heartbeats
(``intervalSeconds``), else the view's own. A registration (a
``registration`` status update naming a group) tells which group an agent
belongs to; it does not make the agent alive. The live members of a group
are its registered agents that are not dead.

Transitions are returned by :meth:`Membership.heartbeat` and
:meth:`Membership.tick` and announced once: only the group's leader
publishes them, and :class:`Announcements` remembers what was announced
(by this leader or, as read back from ``system-status``, by an earlier
one), so a new leader announces only what nobody announced yet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError

logger = logging.getLogger(__name__)

State = Literal["alive", "suspect", "dead"]
STATES: tuple[State, ...] = ("alive", "suspect", "dead")


@dataclass(frozen=True)
class MembershipTiming:
    """Heartbeat interval and how many missed intervals make suspect or dead."""

    interval: float = 1.0
    suspect_after: float = 3.0
    dead_after: float = 6.0

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ConfigError("interval: must be positive")
        if not 0 < self.suspect_after < self.dead_after:
            raise ConfigError("need 0 < suspect_after < dead_after")


@dataclass(frozen=True)
class Transition:
    """An agent's change of state, at a reading of the local monotonic clock."""

    agent: str
    before: State | None
    after: State
    at: float
    group: str | None = None


@dataclass
class _Member:
    last_seen: float | None = None
    interval: float | None = None
    state: State | None = None
    group: str | None = None
    status: str | None = None


class Membership:
    """The membership view of one reader."""

    def __init__(self, timing: MembershipTiming | None = None) -> None:
        self.timing = timing or MembershipTiming()
        self._members: dict[str, _Member] = {}

    def register(self, agent: str, group: str | None) -> None:
        """Record the group an agent registered with."""
        self._members.setdefault(agent, _Member()).group = group

    def heartbeat(
        self,
        agent: str,
        now: float,
        status: str = "healthy",
        interval: float | None = None,
    ) -> list[Transition]:
        """Fold one heartbeat read at ``now``; the agent is alive."""
        member = self._members.setdefault(agent, _Member())
        if member.last_seen is not None and now < member.last_seen:
            now = member.last_seen  # one clock, read in order: never backwards
        member.last_seen = now
        member.status = status
        if interval is not None and interval > 0:
            member.interval = interval
        return self._move(agent, member, "alive", now)

    def tick(self, now: float) -> list[Transition]:
        """The transitions that the passing of time to ``now`` makes."""
        changes = []
        for agent, member in self._members.items():
            if member.last_seen is None:
                continue
            wanted = self._expected(member, now)
            changes += self._move(agent, member, wanted, now)
        return changes

    def _expected(self, member: _Member, now: float) -> State:
        assert member.last_seen is not None
        interval = member.interval or self.timing.interval
        missed = (now - member.last_seen) / interval
        if missed >= self.timing.dead_after:
            return "dead"
        if missed >= self.timing.suspect_after:
            return "suspect"
        return "alive"

    def _move(
        self, agent: str, member: _Member, state: State, now: float
    ) -> list[Transition]:
        if member.state == state:
            return []
        change = Transition(agent, member.state, state, now, member.group)
        member.state = state
        logger.debug("member %s: %s -> %s", agent, change.before, state)
        return [change]

    def state(self, agent: str) -> State | None:
        """An agent's state, or None before its first heartbeat."""
        member = self._members.get(agent)
        return member.state if member is not None else None

    def group_of(self, agent: str) -> str | None:
        member = self._members.get(agent)
        return member.group if member is not None else None

    def members(self, group: str | None = None) -> frozenset[str]:
        """The live members (not dead, heartbeat seen) of a group, or of all."""
        return frozenset(
            agent
            for agent, member in self._members.items()
            if member.state in ("alive", "suspect")
            and (group is None or member.group == group)
        )

    def view(self) -> dict[str, State]:
        """Every agent with a state, and the state."""
        return {a: m.state for a, m in self._members.items() if m.state is not None}


class Announcements:
    """What has been announced per agent, to announce each transition once."""

    def __init__(self) -> None:
        self._announced: dict[str, State] = {}

    def seen(self, agent: str, state: State) -> None:
        """Record an announcement read from the log or sent by this leader."""
        self._announced[agent] = state

    def due(self, membership: Membership, group: str) -> list[tuple[str, State]]:
        """The group's agents whose state differs from what was announced."""
        return [
            (agent, state)
            for agent, state in sorted(membership.view().items())
            if membership.group_of(agent) == group
            and self._announced.get(agent) != state
        ]
