"""Membership from heartbeats (DESIGN.md section 5), on a virtual clock."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nccoord.errors import ConfigError
from nccoord.membership import (
    Announcements,
    Membership,
    MembershipTiming,
    Transition,
)

TIMING = MembershipTiming(interval=1.0, suspect_after=3, dead_after=6)


def states(changes: list[Transition]) -> list[tuple[str, str | None, str]]:
    return [(c.agent, c.before, c.after) for c in changes]


def test_first_heartbeat_makes_an_agent_alive() -> None:
    view = Membership(TIMING)
    assert states(view.heartbeat("a", 0.0)) == [("a", None, "alive")]
    assert view.heartbeat("a", 0.5) == []
    assert view.state("a") == "alive"


def test_missed_heartbeats_make_suspect_then_dead_once_each() -> None:
    view = Membership(TIMING)
    view.heartbeat("a", 0.0)
    assert view.tick(2.9) == []
    assert states(view.tick(3.0)) == [("a", "alive", "suspect")]
    assert view.tick(4.0) == []
    assert states(view.tick(6.0)) == [("a", "suspect", "dead")]
    assert view.tick(100.0) == []


def test_a_heartbeat_brings_a_dead_agent_back() -> None:
    view = Membership(TIMING)
    view.heartbeat("a", 0.0)
    view.tick(10.0)
    assert states(view.heartbeat("a", 11.0)) == [("a", "dead", "alive")]


def test_an_agents_advertised_interval_scales_its_thresholds() -> None:
    view = Membership(TIMING)
    view.heartbeat("slow", 0.0, interval=10.0)
    assert view.tick(29.0) == []
    assert states(view.tick(30.0)) == [("slow", "alive", "suspect")]


def test_live_members_of_a_group_are_registered_and_not_dead() -> None:
    view = Membership(TIMING)
    view.register("a", "g")
    view.register("b", "g")
    view.register("c", "other")
    view.register("d", "g")  # registered, never heard from
    for agent in "abc":
        view.heartbeat(agent, 0.0)
    view.heartbeat("a", 4.0)
    view.tick(4.0)
    assert view.state("b") == "suspect"
    assert view.members("g") == {"a", "b"}
    view.tick(7.0)
    assert view.members("g") == {"a"}


def test_announcements_cover_each_state_once() -> None:
    view = Membership(TIMING)
    view.register("a", "g")
    view.heartbeat("a", 0.0)
    announced = Announcements()
    assert announced.due(view, "g") == [("a", "alive")]
    announced.seen("a", "alive")
    assert announced.due(view, "g") == []
    view.tick(3.5)
    assert announced.due(view, "g") == [("a", "suspect")]


def test_a_new_leader_does_not_repeat_what_an_earlier_one_announced() -> None:
    view = Membership(TIMING)
    view.register("a", "g")
    view.heartbeat("a", 0.0)
    view.tick(7.0)
    successor = Announcements()
    successor.seen("a", "dead")  # read back from system-status
    assert successor.due(view, "g") == []


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ConfigError):
        MembershipTiming(suspect_after=5, dead_after=5)


@pytest.mark.property
@settings(max_examples=200, print_blob=True, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.floats(0, 5), st.booleans()), max_size=40
    )
)
def test_state_follows_the_time_since_the_last_heartbeat(
    events: list[tuple[str, float, bool]],
) -> None:
    view = Membership(TIMING)
    now = 0.0
    last: dict[str, float] = {}
    reported: dict[str, list[str]] = {}
    for agent, gap, beat in events:
        now += gap
        changes = view.heartbeat(agent, now) if beat else []
        changes += view.tick(now)
        if beat:
            last[agent] = now
        for change in changes:
            reported.setdefault(change.agent, []).append(change.after)
        for name, at in last.items():
            missed = now - at
            expected = "dead" if missed >= 6 else "suspect" if missed >= 3 else "alive"
            assert view.state(name) == expected
            # the transitions reported tell the state
            assert reported[name][-1] == expected
    for moves in reported.values():
        # each transition is reported once: no state follows itself
        assert all(a != b for a, b in itertools.pairwise(moves))
