"""Election safety under generated faults, over the deterministic simulator.

Hypothesis chooses the candidates' clocks and latencies and a schedule of
faults (cuts both ways, read-only and write-only, with failed or vanishing
writes; delayed and duplicated writes; redelivered reads; crashes with
restarts; pauses past the lease; resignations; retention). The simulator
(:mod:`nccoord.sim`) checks after every instant: one leader per term, no
two candidates acting as leader at once, terms only grow, a leader only for
a term whose Claim it read back as won, every view equal to the log's fold;
and, once the faults are over, a leader within the liveness bound.

Runs: ``pytest -m property``. The default profile takes under two minutes
on two cores; ``HYPOTHESIS_PROFILE=thorough pytest -m property`` runs twenty
times as many examples (about half an hour). A failure prints the seed and
the schedule (a ``nccoord.sim.replay(...)`` line to paste) and a
``@reproduce_failure`` blob.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from nccoord.sim import (
    FAULT_KINDS,
    Fault,
    Profile,
    Schedule,
    Simulator,
    Violation,
    random_schedule,
    rate_bounds,
)


@pytest.fixture(autouse=True, scope="module")
def _quiet_candidates() -> Iterator[None]:
    # The simulator's trace says what happened; the candidates' warnings
    # (expected here by the hundred) would only bury a failure's message.
    logger = logging.getLogger("nccoord")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


LEASE = 2.0
DRIFT = 0.05
HORIZON = 20.0  # faults start within the first HORIZON seconds

settings.register_profile(
    "sim-default",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    parent=settings.get_profile("sim-default"),
    max_examples=20_000,
)
_PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "sim-default")
PROFILE = settings.get_profile(
    _PROFILE_NAME if _PROFILE_NAME in ("sim-default", "thorough") else "sim-default"
)
# The thorough profile runs a test for longer than the suite's timeout allows.
pytestmark = [
    pytest.mark.property,
    pytest.mark.timeout(600 if _PROFILE_NAME != "thorough" else 4 * 3600),
]


# -- strategies ---------------------------------------------------------------


def _seconds(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    slow, fast = rate_bounds(DRIFT)
    return Profile(
        rate=draw(_seconds(slow, fast)),
        offset=draw(_seconds(0, 10_000)),
        write_latency=draw(_seconds(0.001, 0.25)),
        read_latency=draw(_seconds(0.001, 0.25)),
    )


@st.composite
def faults(draw: st.DrawFn, candidates: int, kind: str | None = None) -> Fault:
    """One fault; the fields a kind does not use keep their defaults."""
    kind = kind or draw(st.sampled_from(FAULT_KINDS))
    fields: dict[str, Any] = {
        "at": draw(_seconds(0, HORIZON)),
        "kind": kind,
        "candidate": draw(st.integers(0, candidates - 1)),
    }
    if kind == "cut":
        fields["duration"] = draw(_seconds(0.05, 3 * LEASE))
        fields["mode"] = draw(st.sampled_from(("both", "read", "write")))
        fields["fate"] = draw(st.sampled_from(("fail", "vanish")))
        fields["delay"] = draw(_seconds(0.01, 2 * LEASE))  # unknown-outcome timeout
    elif kind in ("delay", "duplicate"):
        fields["duration"] = draw(_seconds(0.05, 2 * LEASE))
        fields["delay"] = draw(_seconds(0.0, 2 * LEASE))
    elif kind == "rewind":
        fields["count"] = draw(st.integers(1, 12))
    elif kind == "crash":
        fields["duration"] = draw(_seconds(0.0, 3 * LEASE))
    elif kind == "pause":
        # Half the pauses outlast the lease: the deposed-leader case.
        fields["duration"] = draw(
            st.one_of(_seconds(0.01, LEASE), _seconds(LEASE, 4 * LEASE))
        )
    elif kind == "trim":
        # Retention longer than a leader's budget (see nccoord.sim).
        fields["delay"] = draw(_seconds(LEASE, 4 * LEASE))
    return Fault(**fields)


@st.composite
def schedules(draw: st.DrawFn, max_faults: int = 12) -> Schedule:
    candidates = draw(st.integers(2, 5))
    chosen = draw(st.lists(faults(candidates), max_size=max_faults))
    return Schedule(
        profiles=tuple(
            draw(st.lists(profiles(), min_size=candidates, max_size=candidates))
        ),
        faults=tuple(sorted(chosen, key=lambda fault: fault.at)),
        lease=LEASE,
        drift=DRIFT,
        margin=draw(st.sampled_from((0.0, 0.1))),
        jitter=draw(_seconds(0.0, 0.9)),
    )


seeds = st.integers(0, 2**32 - 1)


def _note_faults(schedule: Schedule) -> None:
    for fault in schedule.faults:
        detail = fault.mode + "/" + fault.fate if fault.kind == "cut" else ""
        event(f"fault {fault.kind} {detail}".strip())


# -- properties over whole schedules -----------------------------------------


@settings(PROFILE)
@given(seed=seeds, schedule=schedules())
def test_election_is_safe_and_live_under_generated_faults(
    seed: int, schedule: Schedule
) -> None:
    _note_faults(schedule)
    sim = Simulator(seed, schedule).run()
    event(f"elections: {min(len(sim.elections), 10)}")
    # Steer the search towards runs where one leader's start comes close to
    # the previous one's end.
    target(-min(sim.closest, 10 * LEASE), label="closest approach to an overlap")


@settings(PROFILE, max_examples=PROFILE.max_examples * 4)
@given(seed=seeds)
def test_election_is_safe_and_live_under_uniform_random_faults(seed: int) -> None:
    # Hypothesis's own choices lean to edge values; uniform draws from a
    # seeded random source reach the middle of each range, where faults
    # overlap in time. The schedule is a function of the seed alone.
    schedule = random_schedule(random.Random(seed))
    _note_faults(schedule)
    Simulator(seed, schedule).run()


@settings(PROFILE, max_examples=max(PROFILE.max_examples // 2, 1))
@given(
    seed=seeds,
    schedule=schedules(max_faults=6),
    kind=st.sampled_from(FAULT_KINDS),
    data=st.data(),
)
def test_each_fault_kind_alone_is_survived(
    seed: int, schedule: Schedule, kind: str, data: st.DataObject
) -> None:
    # Many faults of one kind at once, so each kind gets explored on its own.
    extra = data.draw(
        st.lists(faults(len(schedule.profiles), kind), min_size=1, max_size=8)
    )
    chosen = sorted((*schedule.faults, *extra), key=lambda fault: fault.at)
    schedule = msgspec.structs.replace(schedule, faults=tuple(chosen))
    _note_faults(schedule)
    Simulator(seed, schedule).run()


@settings(PROFILE, max_examples=max(PROFILE.max_examples // 4, 1))
@given(seed=seeds, schedule=schedules())
def test_replay_reproduces_the_run_exactly(seed: int, schedule: Schedule) -> None:
    first = Simulator(seed, schedule).run()
    again = Simulator(seed, Schedule.from_json(schedule.to_json())).run()
    assert again.trace == first.trace
    assert again.elections == first.elections


# -- the same, as a state machine that injects faults while running ----------


class ElectionUnderFaults(RuleBasedStateMachine):
    """Time advances in steps; between steps a fault may start at once.

    Every step runs the simulator, which checks the safety invariants after
    each instant; at the end the faults stop and a leader must appear within
    the liveness bound. A failure's message carries the seed and the
    schedule built so far, which replay the run.
    """

    sim: Simulator
    failed = False

    @initialize(
        seed=seeds,
        candidates=st.lists(profiles(), min_size=2, max_size=5),
        margin=st.sampled_from((0.0, 0.1)),
    )
    def start(self, seed: int, candidates: list[Profile], margin: float) -> None:
        schedule = Schedule(
            profiles=tuple(candidates), lease=LEASE, drift=DRIFT, margin=margin
        )
        self.sim = Simulator(seed, schedule)

    @rule(seconds=_seconds(0.01, 2 * LEASE))
    def advance(self, seconds: float) -> None:
        try:
            self.sim.run_until(self.sim.now + seconds)
        except Violation:
            self.failed = True
            raise

    @precondition(lambda self: self.sim.now < 4 * HORIZON)
    @rule(data=st.data())
    def fault(self, data: st.DataObject) -> None:
        chosen = data.draw(faults(len(self.sim.nodes)))
        event(f"fault {chosen.kind}")
        self.sim.add_fault(Fault(**{**_fields(chosen), "at": self.sim.now}))

    @invariant()
    def leaders_terms_grow_in_real_time(self) -> None:
        terms = [election.term for election in self.sim.elections]
        assert terms == sorted(terms), f"elected terms out of order: {terms}"

    def teardown(self) -> None:
        # The faults stop; a leader must follow within the liveness bound.
        if hasattr(self, "sim") and not self.failed:
            self.sim.run()


def _fields(fault: Fault) -> dict[str, Any]:
    return {name: getattr(fault, name) for name in fault.__struct_fields__}


TestElectionUnderFaults = ElectionUnderFaults.TestCase
TestElectionUnderFaults.settings = settings(
    PROFILE,
    max_examples=max(PROFILE.max_examples // 3, 1),
    stateful_step_count=40,
)
