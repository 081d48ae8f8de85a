"""The consensus broadcaster's rules (DESIGN.md section 4).

Property tests drive every agent's proposal view, a sequence of leaders and
lagging, restarting readers over an in-memory broadcast log, with duplicate
delivery, leader failover mid-round and deposed leaders that still write,
and check agreement, validity, at most one accepted result per round, and
progress once one leader stays up and a quorum has proposed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nccoord.consensus import (
    Ballots,
    Leader,
    Majority,
    Proposal,
    Result,
    Results,
    Unanimous,
    Verdict,
    decide,
    tally_key,
)
from nccoord.errors import ConfigError
from nccoord.events import Broadcast, Scalar, decode, encode
from nccoord.log import MemoryLog

GROUP = "g"
KEY = GROUP.encode()
VALUES: tuple[Scalar, ...] = ("red", "green", 1, True, None)


def result(round: int, term: int, value: Scalar = "v") -> Result:
    return Result(GROUP, round, term, value, ("a",))


# -- the reader's rule -------------------------------------------------------


def test_first_result_of_a_round_wins() -> None:
    results = Results()
    assert results.accept(result(1, 1, "red")) is Verdict.ACCEPTED
    assert results.accept(result(1, 2, "blue")) is Verdict.DECIDED_BEFORE
    assert results.get(GROUP, 1) == result(1, 1, "red")


def test_results_of_a_lower_term_are_ignored() -> None:
    results = Results()
    results.accept(result(1, 3))
    assert results.accept(result(2, 2)) is Verdict.STALE_TERM
    assert results.get(GROUP, 2) is None
    assert results.term(GROUP) == 3


def test_a_repeated_result_changes_nothing() -> None:
    results = Results()
    results.accept(result(1, 1, "red"))
    assert results.accept(result(1, 1, "red")) is Verdict.DECIDED_BEFORE
    assert results.decided(GROUP) == {1: result(1, 1, "red")}


def test_groups_are_folded_apart() -> None:
    results = Results()
    results.accept(result(1, 5))
    other = Result("h", 1, 1, "x", ("b",))
    assert results.accept(other) is Verdict.ACCEPTED
    assert results.term("h") == 1


# -- ballots and rules -------------------------------------------------------


def test_an_agents_first_proposal_for_a_round_counts() -> None:
    ballots = Ballots()
    assert ballots.add(Proposal(GROUP, 1, "a", "red"))
    assert not ballots.add(Proposal(GROUP, 1, "a", "blue"))
    assert not ballots.add(Proposal(GROUP, 1, "a", "red"))
    assert ballots.votes(GROUP, 1) == {"a": "red"}


def test_rounds_closed_through_are_forgotten() -> None:
    ballots = Ballots()
    ballots.add(Proposal(GROUP, 1, "a", "red"))
    ballots.add(Proposal(GROUP, 2, "a", "red"))
    ballots.close_through(GROUP, 1)
    assert ballots.open_rounds(GROUP) == [2]
    assert not ballots.add(Proposal(GROUP, 1, "b", "red"))


def test_majority_waits_for_a_quorum_of_live_members() -> None:
    members = frozenset("abcde")
    votes: dict[str, Scalar] = {"a": "red", "b": "red"}
    assert decide(votes, members, Majority()) is None
    votes["c"] = "blue"
    assert decide(votes, members, Majority()) == ("red", ("a", "b", "c"))


def test_majority_counts_only_live_members() -> None:
    votes: dict[str, Scalar] = {"a": "red", "x": "blue", "y": "blue"}
    assert decide(votes, {"a", "b"}, Majority()) is None
    assert decide(votes, {"a"}, Majority()) == ("red", ("a",))


def test_majority_tie_goes_to_the_value_proposed_first() -> None:
    votes: dict[str, Scalar] = {"b": "blue", "a": "red", "c": "red", "d": "blue"}
    assert decide(votes, set("abcd"), Majority()) == ("blue", ("a", "b", "c", "d"))


def test_true_and_one_are_different_votes() -> None:
    votes: dict[str, Scalar] = {"a": True, "b": 1, "c": 1}
    assert decide(votes, set("abc"), Majority()) == (1, ("a", "b", "c"))
    assert tally_key(True) != tally_key(1)


def test_unanimous_needs_every_live_member_to_agree() -> None:
    rule = Unanimous()
    assert decide({"a": "x", "b": "x"}, {"a", "b", "c"}, rule) is None
    assert decide({"a": "x", "b": "y"}, {"a", "b"}, rule) is None
    assert decide({"a": "x", "b": "x"}, {"a", "b"}, rule) == ("x", ("a", "b"))


def test_a_quorum_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="quorum"):
        Majority(quorum=0)


def test_leader_does_not_decide_a_round_twice_or_an_accepted_one() -> None:
    ballots, results = Ballots(), Results()
    for agent in "abc":
        ballots.add(Proposal(GROUP, 1, agent, "red"))
        ballots.add(Proposal(GROUP, 2, agent, "blue"))
    results.accept(result(1, 1, "green"))
    leader = Leader(GROUP, 2, Majority())
    due = leader.due(ballots, results, "abc")
    assert [(d.round, d.value) for d in due] == [(2, "blue")]
    assert leader.due(ballots, results, "abc") == []
    leader.failed(due[0])
    assert [d.round for d in leader.due(ballots, results, "abc")] == [2]


@pytest.mark.property
@settings(max_examples=300, print_blob=True, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdefg"), st.sampled_from(VALUES), min_size=1),
    st.sets(st.sampled_from("abcdefg"), min_size=1),
)
def test_majority_agrees_with_a_naive_count(
    votes: dict[str, Scalar], members: set[str]
) -> None:
    outcome = decide(votes, members, Majority())
    counted = {a: v for a, v in votes.items() if a in members}
    if len(counted) <= len(members) // 2:
        assert outcome is None
        return
    assert outcome is not None
    value, voters = outcome
    assert set(voters) == set(counted)
    tallies = [
        sum(1 for v in counted.values() if tally_key(v) == tally_key(w))
        for w in counted.values()
    ]
    mine = sum(1 for v in counted.values() if tally_key(v) == tally_key(value))
    assert mine == max(tallies)


# -- the whole broadcaster over an in-memory log -----------------------------


@dataclass
class Reader:
    """A reader of the broadcast log: where it is, and what it accepted."""

    position: int = 0
    fold: Results = field(default_factory=Results)
    accepted_per_round: dict[int, int] = field(default_factory=dict)

    def read(self, log: MemoryLog, upto: int) -> None:
        for offset, _, value in log.read(0, self.position, 0):
            if offset >= upto:
                break
            self.take(value)
            self.position = offset + 1

    def take(self, value: bytes) -> None:
        read = Result.from_broadcast(decode(Broadcast, value))
        if self.fold.accept(read) is Verdict.ACCEPTED:
            count = self.accepted_per_round.get(read.round, 0)
            self.accepted_per_round[read.round] = count + 1


@dataclass
class Agent:
    ballots: Ballots = field(default_factory=Ballots)
    reader: Reader = field(default_factory=Reader)
    leader: Leader | None = None
    members: frozenset[str] = frozenset()


class Broadcaster:
    """Agents, a sequence of leaders and readers over one broadcast log."""

    def __init__(self, names: list[str], proposals: list[Proposal]) -> None:
        self.log = MemoryLog()
        self.names = names
        self.agents = {name: Agent() for name in names}
        self.proposals = proposals
        self.readers = [Reader() for _ in range(3)]
        self.term = 0
        self.current: str | None = None
        self.redundant: list[Result] = []  # written by a caught-up leader

    @property
    def end(self) -> int:
        return self.log.bounds(0)[1]

    def deliver(self, index: int, to: str) -> None:
        proposal = self.proposals[index % len(self.proposals)]
        agent = self.agents[to]
        if agent.reader.fold.get(GROUP, proposal.round) is None:
            agent.ballots.add(proposal)

    def elect(self, name: str, members: frozenset[str]) -> None:
        """A new term: the leader takes over, reads the log to its end first."""
        self.term += 1
        self.current = name
        agent = self.agents[name]
        agent.reader.read(self.log, self.end)
        agent.leader = Leader(GROUP, self.term, Majority())
        agent.members = members | {name}

    def decide(self, name: str, catch_up: bool) -> None:
        """``name`` decides as leader; a deposed leader does not read first."""
        agent = self.agents[name]
        if agent.leader is None:
            return
        if catch_up:
            agent.reader.read(self.log, self.end)
        log_fold = Reader()
        log_fold.read(self.log, self.end)
        for decision in agent.leader.due(
            agent.ballots, agent.reader.fold, agent.members
        ):
            written = Result(
                GROUP,
                decision.round,
                agent.leader.term,
                decision.value,
                decision.voters,
            )
            event = Broadcast(
                kind="consensus-result",
                timestamp=datetime(2025, 7, 26, tzinfo=UTC),
                group=GROUP,
                round=written.round,
                term=written.term,
                value=written.value,
                voters=list(written.voters),
            )
            if catch_up and log_fold.fold.get(GROUP, decision.round) is not None:
                self.redundant.append(written)
            self.log.append(0, KEY, encode(event))


step = st.one_of(
    st.tuples(st.just("deliver"), st.integers(0, 99), st.integers(0, 9)),
    st.tuples(st.just("gossip"), st.integers(0, 99)),
    st.tuples(st.just("elect"), st.integers(0, 9), st.integers(1, 2**7 - 1)),
    st.tuples(st.just("decide"), st.integers(0, 9)),
    st.tuples(st.just("read"), st.integers(0, 2), st.integers(1, 4)),
    st.tuples(st.just("redeliver"), st.integers(0, 2), st.integers(1, 4)),
    st.tuples(st.just("restart"), st.integers(0, 2)),
)


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[list[str], list[Proposal], list[tuple[Any, ...]]]:
    names = [f"a{i}" for i in range(draw(st.integers(3, 6)))]
    rounds = draw(st.integers(1, 4))
    proposals = [
        Proposal(GROUP, round, name, draw(st.sampled_from(VALUES[:3])))
        for round in range(1, rounds + 1)
        for name in names
        if draw(st.booleans())
    ] or [Proposal(GROUP, 1, names[0], "red")]
    return names, proposals, draw(st.lists(step, min_size=20, max_size=80))


@pytest.mark.property
@settings(max_examples=400, print_blob=True, deadline=None)
@given(scenarios())
def test_agreement_validity_one_result_per_round_and_progress(
    scenario: tuple[list[str], list[Proposal], list[tuple[Any, ...]]],
) -> None:
    names, proposals, steps = scenario
    world = Broadcaster(names, proposals)
    for kind, *args in steps:
        if kind == "deliver":
            world.deliver(args[0], names[args[1] % len(names)])
        elif kind == "gossip":
            for name in names:
                world.deliver(args[0], name)
        elif kind == "elect":
            mask = args[1]
            live = frozenset(n for i, n in enumerate(names) if mask >> i & 1)
            world.elect(names[args[0] % len(names)], live)
        elif kind == "decide":
            # The current leader reads the log first; any other one that led
            # before is a deposed leader writing from what it last knew.
            name = names[args[0] % len(names)]
            world.decide(name, catch_up=name == world.current)
        elif kind == "read":
            reader = world.readers[args[0]]
            reader.read(world.log, reader.position + args[1])
        elif kind == "redeliver":
            reader = world.readers[args[0]]
            start = max(0, reader.position - args[1])
            for offset, _, value in world.log.read(0, start, 0):
                if offset >= reader.position:
                    break
                reader.take(value)
        elif kind == "restart":
            world.readers[args[0]] = Reader()

    # A leader that stays up, with every proposal and every member.
    final = names[0]
    world.elect(final, frozenset(names))
    for index in range(len(proposals)):
        world.deliver(index, final)
    world.decide(final, catch_up=True)
    for reader in world.readers:
        reader.read(world.log, world.end)

    proposed: dict[int, set[tuple[str, Scalar]]] = {}
    voters: dict[int, set[str]] = {}
    for p in proposals:
        proposed.setdefault(p.round, set()).add(tally_key(p.value))
        voters.setdefault(p.round, set()).add(p.agent)
    everyone = [r.fold.decided(GROUP) for r in world.readers] + [
        a.reader.fold.decided(GROUP) for a in world.agents.values()
    ]
    for decided in everyone:
        for round, accepted in decided.items():
            # agreement: every reader accepted the same value for the round
            assert accepted == everyone[0][round], (round, accepted, everyone[0])
            # validity: the value was proposed for that round
            assert tally_key(accepted.value) in proposed[round]
            assert set(accepted.voters) <= voters[round]
    for reader in world.readers:
        # at most one accepted result per round, duplicates and all
        assert all(count == 1 for count in reader.accepted_per_round.values())
    # progress: each round a quorum proposed is decided once a leader stays up
    for round, agents in voters.items():
        if len(agents) > len(names) // 2:
            assert round in everyone[0], f"round {round} undecided"
    # a leader that read the log before deciding never decided a round the
    # log had decided already
    assert world.redundant == []
