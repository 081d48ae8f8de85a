"""Fixed scenarios over the deterministic simulator (nccoord.sim).

Each test names the rule of DESIGN.md section 3 it exercises. The simulator
checks the safety invariants after every instant on its own and raises
:class:`~nccoord.sim.Violation` (with the seed and schedule) when one fails;
the tests below assert what the user would see on top of that: who leads,
when, and why leadership ended.

Unless a test says otherwise: lease 2 s, drift 5 %, margin 0.1 s, renewals
every 0.5 s, every clock exact, no latency jitter; ``c0`` wins term 1 at
the start because its Claim is the first one appended.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from nccoord.candidate import Timing
from nccoord.sim import Fault, Profile, Schedule, Simulator, Violation


@pytest.fixture(autouse=True, scope="module")
def _quiet_candidates() -> Iterator[None]:
    # The simulator's trace says what happened; the candidates' warnings
    # (expected here by the hundred) would only bury a failure's message.
    logger = logging.getLogger("nccoord")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


TIMING = Timing(lease=2.0, drift=0.05, margin=0.1)
LATENCY = 0.01


def schedule(*faults: Fault, profiles: tuple[Profile, ...] | None = None) -> Schedule:
    return Schedule(
        profiles=profiles
        or tuple(
            Profile(write_latency=LATENCY, read_latency=LATENCY) for _ in range(3)
        ),
        faults=faults,
        lease=TIMING.lease,
        drift=TIMING.drift,
        margin=TIMING.margin,
        jitter=0.0,
    )


def elected_after(sim: Simulator, t: float) -> list[tuple[float, str, int]]:
    return [(e.at, e.candidate, e.term) for e in sim.elections if e.at >= t]


def test_start_elects_exactly_one_leader_for_term_1() -> None:
    sim = Simulator(1, schedule()).run()
    assert [(e.candidate, e.term) for e in sim.elections] == [("c0", 1)]
    assert sim.revocations == []


def test_leader_crash_fails_over_once_the_challengers_patience_has_passed() -> None:
    # Rule: a challenger claims a held term only once lease*(1+drift)+margin
    # has passed since it read the holder's latest record.
    sim = Simulator(2, schedule(Fault(at=5.0, kind="crash", duration=30.0))).run()
    [(at, who, term)] = elected_after(sim, 5.0)
    assert who != "c0" and term == 2
    patience = TIMING.patience(TIMING.lease)
    last_renew_read = 4.5 + 2 * LATENCY  # c0 renews every 0.5 s
    assert last_renew_read + patience <= at
    assert at <= 5.0 + patience + 4 * LATENCY


def test_paused_leader_stops_at_its_deadline_and_never_acts_after_resuming() -> None:
    # Rule: a leader acts only until its last counted send + lease*(1-drift)
    # - margin, whether or not the log answers. Paused for twice the lease,
    # it wakes up with a clock past that deadline.
    sim = Simulator(3, schedule(Fault(at=5.0, kind="pause", duration=4.0))).run()
    [(at, who, term)] = elected_after(sim, 5.0)
    assert who != "c0" and term == 2
    deadline = 4.5 + TIMING.budget(TIMING.lease)  # last renew sent at 4.5
    assert deadline < at < 9.0
    # On resuming, c0 reads the new Claim and steps down in the same turn;
    # the simulator has checked it did not act in between.
    [revoked] = [r for r in sim.revocations if r.candidate == "c0"]
    assert (revoked.at, revoked.term) == (9.0, 1)
    assert revoked.reason in ("superseded", "expired")


def test_leader_cut_off_both_ways_stops_before_the_next_leader_starts() -> None:
    cut = Fault(at=5.0, kind="cut", mode="both", fate="vanish", duration=10.0)
    sim = Simulator(4, schedule(cut)).run()
    [revoked] = [r for r in sim.revocations if r.candidate == "c0"]
    [(at, who, term)] = elected_after(sim, 5.0)
    assert revoked.reason == "expired" and revoked.at < at
    assert who != "c0" and term == 2


def test_resign_hands_over_within_a_few_latencies() -> None:
    # Rule: a resigning leader stops first, then writes a Release; a term
    # with no holder is claimed at once.
    sim = Simulator(5, schedule(Fault(at=5.0, kind="resign"))).run()
    [revoked] = [r for r in sim.revocations if r.candidate == "c0"]
    assert (revoked.at, revoked.reason) == (5.0, "resigned")
    [(at, who, term), *_] = elected_after(sim, 5.0)
    assert who != "c0" and term == 2
    # Release lands, is read, a Claim lands, is read back: two round trips.
    assert at <= 5.0 + 4 * LATENCY + 1e-9


def test_duplicated_appends_and_redelivered_reads_change_nothing() -> None:
    # Rule 4: folding a record twice changes nothing, and a copy of a record
    # at a later offset is a stale or out-of-sequence record.
    faults = [Fault(at=1.0, kind="duplicate", candidate=0, duration=8.0, delay=0.3)]
    faults += [
        Fault(at=float(t), kind="rewind", candidate=c, count=6)
        for t in (3, 6, 9)
        for c in (0, 1, 2)
    ]
    sim = Simulator(6, schedule(*faults)).run()
    assert [(e.candidate, e.term) for e in sim.elections] == [("c0", 1)]
    assert sim.revocations == []
    assert all(node.core.state == sim.log_state for node in sim.nodes)


def test_retention_that_deleted_every_record_still_gives_a_higher_term() -> None:
    # Terms never go backwards, even when retention has deleted every
    # record of the group: the first candidate back claims a fresh term.
    faults = [
        Fault(at=5.0, kind="crash", candidate=c, duration=20.0) for c in (0, 1, 2)
    ]
    faults.append(Fault(at=20.0, kind="trim", delay=10.0))
    sim = Simulator(7, schedule(*faults))
    sim.run_until(25.0)
    low, end = sim.log.bounds(0)
    assert low == end > 0
    term_before = sim.log_state.term
    sim.run()
    [(_at, _who, term)] = elected_after(sim, 25.0)
    assert term > term_before
    assert term == end + 1  # a fresh Claim's term is its base + 1


def test_reader_that_fell_behind_retention_reads_the_log_again() -> None:
    # A reader whose next record was deleted has missed records: it must not
    # fold on as if nothing happened (its view would go stale), it resyncs.
    faults = (
        Fault(at=2.0, kind="cut", candidate=2, mode="read", duration=18.0),
        Fault(at=15.0, kind="trim", delay=4.0, mode="time"),
    )
    sim = Simulator(8, schedule(*faults)).run()
    assert any("lost records" in line for line in sim.trace)
    assert all(node.core.state == sim.log_state for node in sim.nodes)


def test_claim_resent_while_reads_are_cut_counts_the_lease_from_the_first_send() -> (
    None
):
    # A candidate that cannot read sends its Claim, gives up waiting for it
    # after its patience and sends it again. The first copy won long ago
    # and a rival has waited out that win; when the reads come back, the
    # deadline must count from the first send, not from the last one.
    profiles = (
        Profile(write_latency=0.03125, read_latency=0.1875),
        Profile(write_latency=0.03125, read_latency=0.125),
    )
    cut = Fault(at=0.0, kind="cut", mode="both", duration=2.25, delay=1.0)
    sim = Simulator(0, schedule(cut, profiles=profiles)).run()
    # c0's term 1 ran out before c0 could read it: nobody leads term 1.
    assert [e.term for e in sim.elections][:1] == [2]


def test_the_replay_line_of_a_failure_reproduces_it() -> None:
    # Negative control: clocks drifting far beyond the bound make the leader
    # act past the challenger's patience, and the check says so.
    profiles = (
        Profile(rate=0.7, write_latency=LATENCY, read_latency=LATENCY),
        Profile(write_latency=LATENCY, read_latency=LATENCY),
    )
    cut = Fault(at=5.0, kind="cut", mode="both", fate="vanish", duration=10.0)
    with pytest.raises(Violation, match=r"\[no overlap\]") as failure:
        Simulator(9, schedule(cut, profiles=profiles)).run()
    text = str(failure.value)
    assert "replay: nccoord.sim.replay(9, " in text
    line = text.split("replay: ", 1)[1].split("\n", 1)[0]
    import nccoord.sim

    with pytest.raises(Violation) as again:
        eval(line, {"nccoord": nccoord})
    assert str(again.value) == text


def test_retention_shorter_than_the_lease_breaks_safety() -> None:
    # Negative control for the assumption in nccoord.sim: deleting records
    # younger than a leader's budget lets a newcomer find the log empty and
    # claim a fresh term while the leader still acts.
    profiles = (
        Profile(write_latency=LATENCY, read_latency=0.1),
        Profile(write_latency=LATENCY, read_latency=LATENCY),
    )
    faults = (
        Fault(at=4.0, kind="crash", candidate=1, duration=1.0),
        Fault(at=4.9, kind="trim", delay=0.0, mode="time"),
    )
    with pytest.raises(Violation, match=r"\[no overlap\]"):
        Simulator(10, schedule(*faults, profiles=profiles)).run()


@pytest.mark.xfail(
    strict=True,
    raises=Violation,
    reason="known gap: records whose base retention deleted leave a newcomer "
    "unable to establish the state or claim a fresh term (nccoord.sim, the "
    "retention assumption)",
)
def test_records_with_a_deleted_base_leave_newcomers_without_a_leader() -> None:
    # c0 cannot read for 20 s but keeps writing Claims that name the state
    # it last read; c1 leads, then crashes; retention (by age alone) deletes
    # everything but c0's Claims. Whoever reads the log now meets only
    # records whose base is gone.
    faults = (
        Fault(at=1.0, kind="cut", candidate=0, mode="read", duration=20.0),
        Fault(at=10.0, kind="crash", candidate=1, duration=6.0),
        Fault(at=15.0, kind="trim", delay=3.0, mode="time"),
    )
    profiles = tuple(Profile(write_latency=LATENCY, read_latency=LATENCY) for _ in "ab")
    sim = Simulator(11, schedule(*faults, profiles=profiles))
    try:
        sim.run()
    finally:
        stuck = [node.name for node in sim.nodes if node.core.state is None]
    assert stuck == []


def test_claim_naming_a_stale_seq_loses_to_the_renew_that_landed_first() -> None:
    # Rule 1, the compare-and-set: c1 cannot read from 1 s on, so its Claim
    # names seq 1 of term 1 while c0's renewals have moved on. c0 cannot
    # read either from 2.6 s, so it learns of no rival and acts to its
    # deadline (4.3 s). Were the stale Claim to win, c1 would read it back
    # at 4 s and lead alongside c0.
    faults = (
        Fault(at=1.0, kind="cut", candidate=1, mode="read", duration=3.0),
        Fault(at=2.6, kind="cut", candidate=0, mode="read", duration=2.4),
    )
    profiles = tuple(Profile(write_latency=LATENCY, read_latency=LATENCY) for _ in "ab")
    sim = Simulator(12, schedule(*faults, profiles=profiles)).run()
    claims = [line for line in sim.trace if "claim term 2 prev_seq 1 by c1.1" in line]
    assert claims, "c1 did not send the stale Claim this test is about"
    assert all(e.candidate == "c0" for e in sim.elections if e.at < 6.0)
