"""The consensus broadcaster's rules, without I/O.

Agents propose values for numbered rounds of a group (``proposal`` status
updates); the group's leader decides each round with a pluggable rule and
writes ``ConsensusResult(group, round, term, value, voters)`` to the
broadcast log through its fenced producer. Everything here is a function of
the records read so far; the Kafka side lives in :mod:`nccoord.coordinator`.

The rules (DESIGN.md section 4):

1. *Ballots.* The first proposal of an agent for a round counts; later ones
   from the same agent for that round, and repeats, are ignored. Only the
   proposals of live members of the group are counted.
2. *Decision.* The leader decides a round with its rule once the rule is
   satisfied; the default, :class:`Majority`, waits for a quorum of the live
   members (more than half unless set) and picks the value most of them
   proposed, the earliest proposed value winning a tie.
3. *Acceptance.* Every reader folds the broadcast log in order through
   :meth:`Results.accept`: the first committed result of a (group, round)
   is the decided value; a result of a lower term than one already seen for
   the group is ignored, as is every later result of an accepted round.
   Every reader sees one partition's records in one order, so no two readers
   accept different values for a round (agreement), and each round has at
   most one accepted result.
4. *Takeover.* A new leader takes the group's fenced producer first (which
   ends any older leader's open transaction), then reads the broadcast log to
   its end, and only then decides: every round an older leader decided is
   known to it by then and is not decided again.

The leader itself is a reader: what it *accepts* from the log is the
outcome, not what it wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from .errors import ConfigError
from .events import Broadcast, Scalar, StatusUpdate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Proposal:
    """One agent's value for one round of a group."""

    group: str
    round: int
    agent: str
    value: Scalar

    @classmethod
    def from_status(cls, update: StatusUpdate) -> Proposal:
        """The proposal a ``proposal`` status update carries."""
        assert update.kind == "proposal"
        assert update.group is not None and update.round is not None
        return cls(update.group, update.round, update.agent_id, update.value)


@dataclass(frozen=True)
class Decision:
    """A value the leader decided for a round, and whose votes counted."""

    group: str
    round: int
    value: Scalar
    voters: tuple[str, ...]


@dataclass(frozen=True)
class Result:
    """A consensus result as written to the broadcast log."""

    group: str
    round: int
    term: int
    value: Scalar
    voters: tuple[str, ...]

    @classmethod
    def from_broadcast(cls, event: Broadcast) -> Result:
        """The result a ``consensus-result`` broadcast carries."""
        assert event.kind == "consensus-result"
        assert event.group is not None and event.round is not None
        assert event.term is not None
        return cls(
            event.group,
            event.round,
            event.term,
            event.value,
            tuple(event.voters or ()),
        )


def tally_key(value: Scalar) -> tuple[str, Scalar]:
    """The key values are counted under: ``True`` and ``1`` are different votes."""
    return type(value).__name__, value


class Rule(Protocol):
    """Decides a round from the counted votes, or says it cannot yet.

    ``votes`` maps each live member that proposed to its value, in the order
    the proposals were read; ``members`` is every live member of the group.
    """

    def decide(
        self, votes: Mapping[str, Scalar], members: frozenset[str]
    ) -> tuple[Scalar, tuple[str, ...]] | None: ...


@dataclass(frozen=True)
class Majority:
    """Decide once a quorum of live members proposed: the most proposed value.

    ``quorum`` is the number of votes needed; unset, more than half of the
    live members. A tie goes to the value proposed first. The voters are
    every member whose vote was counted.
    """

    quorum: int | None = None

    def __post_init__(self) -> None:
        if self.quorum is not None and self.quorum < 1:
            raise ConfigError("quorum: must be at least 1")

    def needed(self, members: frozenset[str]) -> int:
        return self.quorum if self.quorum is not None else len(members) // 2 + 1

    def decide(
        self, votes: Mapping[str, Scalar], members: frozenset[str]
    ) -> tuple[Scalar, tuple[str, ...]] | None:
        if not votes or len(votes) < self.needed(members):
            return None
        counts: dict[tuple[str, Scalar], int] = {}
        for value in votes.values():
            key = tally_key(value)
            counts[key] = counts.get(key, 0) + 1
        # max() keeps the first of equal counts: dicts keep proposal order.
        _, winner = max(counts, key=lambda key: counts[key])
        return winner, tuple(sorted(votes))


@dataclass(frozen=True)
class Unanimous:
    """Decide only when every live member proposed, all the same value."""

    def decide(
        self, votes: Mapping[str, Scalar], members: frozenset[str]
    ) -> tuple[Scalar, tuple[str, ...]] | None:
        if not members or set(votes) != members:
            return None
        if len({tally_key(value) for value in votes.values()}) != 1:
            return None
        return next(iter(votes.values())), tuple(sorted(votes))


class Ballots:
    """The proposals read so far for the open rounds of every group."""

    def __init__(self) -> None:
        self._votes: dict[tuple[str, int], dict[str, Scalar]] = {}
        self._closed: dict[str, int] = {}

    def add(self, proposal: Proposal) -> bool:
        """Count a proposal; False for a repeat, a second vote or a closed round."""
        if proposal.round <= self._closed.get(proposal.group, -1):
            return False
        votes = self._votes.setdefault((proposal.group, proposal.round), {})
        if proposal.agent in votes:
            return False
        votes[proposal.agent] = proposal.value
        return True

    def votes(self, group: str, round: int) -> dict[str, Scalar]:
        """Each agent's counted value for a round, in the order they were read."""
        return dict(self._votes.get((group, round), {}))

    def open_rounds(self, group: str) -> list[int]:
        """The rounds of a group with at least one proposal, oldest first."""
        return sorted(r for g, r in self._votes if g == group)

    def close(self, group: str, round: int) -> None:
        """Forget a decided round; its late proposals are ignored."""
        self._votes.pop((group, round), None)

    def close_through(self, group: str, round: int) -> None:
        """Forget every round up to ``round`` (a reader's memory bound)."""
        self._closed[group] = max(round, self._closed.get(group, -1))
        for key in [k for k in self._votes if k[0] == group and k[1] <= round]:
            del self._votes[key]


def decide(
    votes: Mapping[str, Scalar], members: Iterable[str], rule: Rule
) -> tuple[Scalar, tuple[str, ...]] | None:
    """Apply ``rule`` to the votes of live members only."""
    live = frozenset(members)
    counted = {agent: value for agent, value in votes.items() if agent in live}
    return rule.decide(counted, live)


class Verdict(Enum):
    """What a reader did with one result read from the log."""

    ACCEPTED = "accepted"
    DECIDED_BEFORE = "round already decided"
    STALE_TERM = "term lower than one already seen"


class Results:
    """The reader's fold of the broadcast log: the accepted result per round."""

    def __init__(self) -> None:
        self._accepted: dict[tuple[str, int], Result] = {}
        self._terms: dict[str, int] = {}

    def accept(self, result: Result) -> Verdict:
        """Fold one committed result, read in log order."""
        seen = self._terms.get(result.group, 0)
        if result.term < seen:
            return Verdict.STALE_TERM
        self._terms[result.group] = result.term
        key = (result.group, result.round)
        if key in self._accepted:
            return Verdict.DECIDED_BEFORE
        self._accepted[key] = result
        return Verdict.ACCEPTED

    def get(self, group: str, round: int) -> Result | None:
        """The accepted result of a round, if any."""
        return self._accepted.get((group, round))

    def decided(self, group: str) -> dict[int, Result]:
        """Every accepted result of a group by round."""
        return {r: res for (g, r), res in sorted(self._accepted.items()) if g == group}

    def term(self, group: str) -> int:
        """The highest term of the group's results read so far (0 if none)."""
        return self._terms.get(group, 0)


class Leader:
    """What the group's leader still has to decide, for one term.

    :meth:`due` lists the decisions to write now: rounds the log shows
    undecided, that this term has not already written, and that the rule can
    decide from the live members' votes. A write that failed is forgotten with
    :meth:`failed` so the round is decided again.
    """

    def __init__(self, group: str, term: int, rule: Rule) -> None:
        self.group = group
        self.term = term
        self.rule = rule
        self._written: set[int] = set()

    def due(
        self, ballots: Ballots, results: Results, members: Iterable[str]
    ) -> list[Decision]:
        live = frozenset(members)
        decisions = []
        for round in ballots.open_rounds(self.group):
            if round in self._written or results.get(self.group, round) is not None:
                continue
            outcome = decide(ballots.votes(self.group, round), live, self.rule)
            if outcome is not None:
                value, voters = outcome
                decisions.append(Decision(self.group, round, value, voters))
                self._written.add(round)
        return decisions

    def failed(self, decision: Decision) -> None:
        self._written.discard(decision.round)
