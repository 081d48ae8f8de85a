"""A deterministic simulation of one election group under faults.

The simulator runs the real :class:`~nccoord.candidate.Candidate` of every
participant over one in-memory partition (:class:`~nccoord.log.MemoryLog`),
with virtual time and a seeded random source: the same seed and schedule
give the same run, event for event. Only the log and the clocks are
simulated; the election rules are the ones the elector runs over Kafka, and
the driver here feeds them in the same order as
:class:`~nccoord.elector.Elector` does (records read, end reached, failed
writes, commands, then a tick).

Model
=====

Time. ``T`` is the global virtual time. Candidate ``i`` reads its own
monotonic clock ``offset_i + rate_i * T``. ``Timing.drift`` bounds how much
faster one clock runs than another, so the rates of a run are drawn from
:func:`rate_bounds`, ``[(1 + d) ** -0.5, (1 + d) ** 0.5]``: any two rates are
then within a factor ``1 + d`` of each other. (The lease rules tolerate a
little more, a factor ``(L(1 + d) + m) / (L(1 - d) - m)``; rates beyond even
that are how a test shows the checks can fail.) A restarted process keeps
its machine's clock.

Latency. Each candidate has its own write latency (send to append) and read
latency (append to delivery to its reader), each sample multiplied by a
random factor in ``[1 - jitter, 1 + jitter]``. With one latency shared by
all, a leader would always learn of a rival's claim as soon as the rival
does, and a fold that had lost its compare-and-set would still pass.

Reading. A reader delivers records in offset order. It reports the end of
the partition (``on_caught_up``) when no record it has been told of is still
on its way, so the end it reports is always true. A reader that finds its
next offset trimmed away has lost records: the driver stops leading and
reads the log again from its new start, like a ``Resync``.

Faults (:class:`Fault`, all chosen by the schedule):

``cut``
    the candidate is cut off from the log for ``duration``: ``mode`` is
    ``both``, ``read`` or ``write``. Reads stall until the cut heals. A write
    sent during the cut either ``fail``\\ s (``fate``): after ``delay``
    seconds its outcome is reported unknown, and it landed or not at random;
    or it ``vanish``\\ es without a word.
``delay``
    writes sent in the window land ``delay`` seconds late (later writes may
    overtake them).
``duplicate``
    writes sent in the window are appended twice, the copy ``delay``
    seconds after the original, at a later offset.
``rewind``
    the candidate's reader goes back ``count`` records and delivers them
    again (redelivery of offsets already read).
``crash``
    the process dies and, ``duration`` later, starts again as a new
    incarnation of the same candidate; its writes already sent still land.
``pause``
    the process stops for ``duration`` (as under SIGSTOP): it handles
    nothing and its application does not act, but its clock runs on; on
    resuming it handles everything that queued up, with late clock readings.
``resign``
    the application asks the candidate to resign.
``trim``
    retention deletes every record appended more than ``delay`` seconds
    ago. With ``mode="time"`` that is all it looks at, as Kafka does;
    otherwise it also keeps what the retention assumption below keeps.

The retention assumption. The lease rules take retention to be much longer
than a lease and than the longest time a running candidate goes without
reading the log. Then no record younger than a leader's budget is deleted (a
candidate that finds the log empty claims a fresh term at once, safe only
once the last holder's deadline has passed); no running candidate loses a
record it has not read; and every record, kept or yet to be written, names
a base (``folded_through + 1``) that is still readable, so that a newcomer
can start from it. Retention here keeps those records however old they
are. Broken, the assumption costs liveness: a newcomer that meets only
records whose base is gone can neither establish the group's state nor
claim a fresh term, and waits for a readable record that may never come
(``test_sim_scenarios`` shows it).

Checks, after every instant of virtual time (:class:`Violation` on failure):

- *one leader per term*: no two incarnations are elected for one term;
- *no overlap*: no two candidates are acting as leader at the same moment;
  a candidate acts while it is up, not paused, and ``is_leader`` holds on its
  own clock (which includes its deadline), checked after every instant and
  also on resuming from a pause, before the elector handles its backlog;
- *terms grow*: the log's term never goes down; each candidate's view of
  the term never goes down (across its incarnations), and it is elected for
  ever higher terms;
- *won before leading*: a candidate is elected only for a term whose winning
  Claim in the log is its own incarnation's;
- *same state*: every candidate's view equals the fold of the whole log
  (trimmed records included) through the last offset it read;
- *liveness*: once the faults are over, some candidate leads within
  :meth:`Simulator.liveness_bound`.

``replay(seed, schedule)`` runs a schedule again; a :class:`Violation`'s
message carries both, as Python to paste.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from . import lease
from .candidate import Action, Candidate, Elected, Resync, Revoked, Send, Timing
from .lease import INITIAL, LeaseRecord, LeaseState
from .log import MemoryLog

logger = logging.getLogger(__name__)

GROUP: Final = "sim"
PARTITION: Final = 0
KEY: Final = GROUP.encode()

FAULT_KINDS: Final = (
    "cut",
    "delay",
    "duplicate",
    "rewind",
    "crash",
    "pause",
    "resign",
    "trim",
)


def rate_bounds(drift: float) -> tuple[float, float]:
    """Clock rates whose pairwise ratios stay within ``1 + drift``."""
    return (1 + drift) ** -0.5, (1 + drift) ** 0.5


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """One candidate's clock and latencies (seconds of global time)."""

    rate: float = 1.0
    offset: float = 0.0
    write_latency: float = 0.01
    read_latency: float = 0.01


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """One fault of a schedule; see the module text for each ``kind``."""

    at: float
    kind: str
    candidate: int = 0
    duration: float = 0.0
    mode: str = "both"
    fate: str = "fail"
    delay: float = 0.0
    count: int = 0

    @property
    def end(self) -> float:
        """When the fault is over, its late writes included."""
        if self.kind in ("delay", "duplicate"):
            return self.at + self.duration + self.delay
        if self.kind == "cut" and self.fate == "fail":
            return self.at + self.duration + self.delay
        return self.at + self.duration


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a run depends on besides the seed.

    ``settle`` is how long the run goes on after :attr:`quiet` on top of
    the liveness bound.
    """

    profiles: tuple[Profile, ...]
    faults: tuple[Fault, ...] = ()
    lease: float = 2.0
    drift: float = 0.05
    margin: float = 0.1
    renew_every: float | None = None
    jitter: float = 0.5
    settle: float = 1.0

    @property
    def timing(self) -> Timing:
        return Timing(self.lease, self.drift, self.margin, self.renew_every)

    @property
    def quiet(self) -> float:
        """When the last fault is over."""
        return max((fault.end for fault in self.faults), default=0.0)

    def with_fault(self, fault: Fault) -> Schedule:
        return msgspec.structs.replace(self, faults=(*self.faults, fault))

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        return msgspec.json.decode(text, type=cls)


class Violation(AssertionError):
    """An invariant failed; the message says which, and how to replay it."""


@dataclass(order=True)
class _Event:
    key: tuple[float, int, int, int]
    run: Callable[[float], None] = field(compare=False)


@dataclass
class _Reader:
    """One opening of a candidate's reader."""

    generation: int
    next: int
    announced: int  # highest offset this reader has been told of
    arrived: int  # highest offset that has reached it
    last_arrival: float


@dataclass
class _Node:
    """One candidate: its process, clock, network state and bookkeeping."""

    index: int
    name: str
    profile: Profile
    core: Candidate
    incarnations: int = 1
    process: int = 0  # bumps on crash: events of a dead process are dropped
    alive: bool = True
    paused_by: set[int] = field(default_factory=set)
    down_by: int | None = None
    read_cut_by: set[int] = field(default_factory=set)
    write_cut_by: dict[int, Fault] = field(default_factory=dict)
    delayed_by: dict[int, Fault] = field(default_factory=dict)
    duplicated_by: dict[int, Fault] = field(default_factory=dict)
    reader: _Reader | None = None
    writer: int = 0
    failures: list[LeaseRecord] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    wake_at: float = math.inf
    read_through: int = -1  # last offset handed to the candidate
    max_term: int = 0
    max_elected: int = 0
    acting_until: float = -math.inf  # when it stops (or stopped) acting

    @property
    def running(self) -> bool:
        return self.alive and not self.paused_by

    @property
    def incarnation(self) -> str:
        return self.core.incarnation

    def clock(self, t: float) -> float:
        return self.profile.offset + self.profile.rate * t

    def to_global(self, local: float) -> float:
        """The first global time at which this clock reads ``local``."""
        t = (local - self.profile.offset) / self.profile.rate
        while self.clock(t) < local:
            t = math.nextafter(t, math.inf)
        return t


@dataclass(frozen=True)
class Election:
    """A candidate's ``Elected`` action, at global time ``at``."""

    at: float
    candidate: str
    incarnation: str
    term: int


@dataclass(frozen=True)
class Revocation:
    """A candidate's ``Revoked`` action, at global time ``at``."""

    at: float
    candidate: str
    incarnation: str
    term: int
    reason: str


class Simulator:
    """One run of a schedule; see the module text.

    Use :meth:`run` for a whole schedule, or :meth:`run_until` and
    :meth:`add_fault` to build the schedule while running (the schedule so
    built, with the seed, replays the run).
    """

    def __init__(self, seed: int, schedule: Schedule) -> None:
        self.seed = seed
        self.schedule = msgspec.structs.replace(schedule, faults=())
        self.timing = schedule.timing
        self.rng = random.Random(seed)
        self.now = 0.0
        self.log = MemoryLog()
        self.trace: list[str] = []
        self.elections: list[Election] = []
        self.revocations: list[Revocation] = []
        self.acted_at: float | None = None  # last instant someone acted
        # The smallest gap seen between one leader's end and the next one's
        # start (global seconds): how close the run came to an overlap.
        self.closest = math.inf
        self._queue: list[_Event] = []
        self._seq = 0
        self._appended_at: list[float] = []
        self._records: list[LeaseRecord] = []  # every record, trimmed or not
        self._bases_in_flight: Counter[int] = Counter()
        self._folded: list[LeaseState] = []  # fold of the log through offset
        self._winners: dict[int, tuple[str, str]] = {}
        self._elected: dict[int, tuple[str, str]] = {}
        self.nodes = [
            self._new_node(index, profile)
            for index, profile in enumerate(schedule.profiles)
        ]
        for node in self.nodes:
            self._open(node, 0.0)
            self._step(node, 0.0)
        for fault in schedule.faults:
            self.add_fault(fault)

    # -- running -------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Schedule one more fault, no earlier than now."""
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"kind: unknown fault {fault.kind!r}")
        if fault.at < self.now:
            raise ValueError("at: a fault cannot start in the past")
        if not 0 <= fault.candidate < len(self.nodes):
            raise ValueError("candidate: no such candidate")
        index = len(self.schedule.faults)
        self.schedule = self.schedule.with_fault(fault)
        self._push_fault(fault.at, index, 0, lambda t: self._start(index, t))
        if fault.kind in ("cut", "delay", "duplicate", "crash", "pause"):
            end = fault.at + fault.duration
            self._push_fault(end, index, 1, lambda t: self._finish(index, t))

    def run_until(self, until: float) -> None:
        """Handle every event before ``until``, checking after each instant."""
        while self._queue and self._queue[0].key[0] < until:
            event = heapq.heappop(self._queue)
            self.now = event.key[0]
            event.run(self.now)
            if not self._queue or self._queue[0].key[0] > self.now:
                self._check_instant(self.now)
        self.now = max(self.now, until)

    @property
    def log_state(self) -> LeaseState:
        """The fold of every record appended so far, trimmed ones included."""
        return self._folded[-1] if self._folded else INITIAL

    def liveness_bound(self) -> float:
        """How long after the faults are over a leader must be acting.

        A late record of the last holder may be read a round trip after the
        faults end; a challenger then waits out the holder's lease (its
        patience, on the slowest clock), claims, and reads its Claim back.
        One such round can go to a Claim nobody acts on (sent by an
        incarnation that has since lost track of it), so two rounds are
        allowed, plus a resigned candidate's hold-off, the renewal interval
        and a forgotten claim's wait.
        """
        slowest, _ = rate_bounds(self.timing.drift)
        slowest = min([slowest, *(node.profile.rate for node in self.nodes)])
        patience = self.timing.patience(self.timing.lease) / slowest
        worst = max(
            p.write_latency + p.read_latency for p in self.schedule.profiles
        ) * (1 + self.schedule.jitter)
        return (
            2 * (patience + 2 * worst)
            + (self.timing.lease + self.timing.renew_interval) / slowest
            + 2 * worst
        )

    def run(self) -> Simulator:
        """Run the schedule to its end and check liveness; return self."""
        quiet = max(self.schedule.quiet, self.now)
        bound = quiet + self.liveness_bound()
        self.run_until(bound)
        if self.acted_at is None or self.acted_at < quiet:
            self._fail(
                "liveness",
                f"no leader acting between the end of the faults at {quiet:.3f} "
                f"and {bound:.3f}",
            )
        self.run_until(bound + self.schedule.settle)
        return self

    # -- events --------------------------------------------------------------

    def _push(self, t: float, run: Callable[[float], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Event((t, 1, self._seq, 0), run))

    def _push_fault(
        self, t: float, index: int, phase: int, run: Callable[[float], None]
    ) -> None:
        # Faults sort before other events of the same instant and among
        # themselves by their place in the schedule, so a schedule built
        # while running replays in the same order.
        heapq.heappush(self._queue, _Event((t, 0, index, phase), run))

    def _for_process(
        self, node: _Node, run: Callable[[float], None]
    ) -> Callable[[float], None]:
        process = node.process

        def guarded(t: float) -> None:
            if node.process == process:
                run(t)

        return guarded

    def _jitter(self, latency: float) -> float:
        spread = self.schedule.jitter
        return latency * self.rng.uniform(1 - spread, 1 + spread)

    # -- the driver (the elector's loop, over simulated I/O) ----------------

    def _new_node(self, index: int, profile: Profile) -> _Node:
        name = f"c{index}"
        return _Node(index, name, profile, self._candidate(name, 1))

    def _candidate(self, name: str, incarnation: int) -> Candidate:
        return Candidate(GROUP, name, f"{name}.{incarnation}", self.timing)

    def _open(self, node: _Node, t: float) -> None:
        """(Re)build the writer and reader and restart the candidate."""
        node.writer += 1
        low, end = self.log.bounds(PARTITION)
        generation = node.reader.generation + 1 if node.reader is not None else 1
        arrival = t + self._jitter(node.profile.read_latency)
        node.reader = _Reader(generation, low, end - 1, low - 1, arrival)
        node.read_through = low - 1
        node.core.restart(low, node.clock(t))
        self._note(t, node, f"opens the log at {low} (end {end})")
        reader = node.reader
        self._push(
            arrival, self._for_process(node, self._arrive(node, reader, end - 1))
        )

    def _arrive(
        self, node: _Node, reader: _Reader, offset: int
    ) -> Callable[[float], None]:
        def run(t: float) -> None:
            if node.reader is reader:
                reader.arrived = max(reader.arrived, offset)
                self._step(node, t)

        return run

    def _step(self, node: _Node, t: float) -> None:
        """One turn of the elector's loop for ``node`` at global time ``t``."""
        if not node.running:
            return
        now = node.clock(t)
        core = node.core
        actions: list[Action] = []
        if not self._read(node, t, now, actions):
            return
        for record in node.failures:
            actions += core.on_send_failed(record, now, "outcome unknown")
        node.failures.clear()
        for _ in node.commands:
            actions += core.resign(now)
        node.commands.clear()
        actions += core.tick(now)
        self._check_view(node, t)
        self._carry_out(node, t, actions)
        self._wake(node, t)

    def _read(self, node: _Node, t: float, now: float, actions: list[Action]) -> bool:
        """Hand what has reached the reader to the candidate; False on a gap."""
        reader = node.reader
        assert reader is not None
        if node.read_cut_by:
            return True
        low, _ = self.log.bounds(PARTITION)
        if reader.next < low and reader.next <= reader.arrived:
            self._note(t, node, f"lost records {reader.next}..{low - 1} to retention")
            self._carry_out(node, t, node.core.close())
            self._open(node, t)
            self._wake(node, t)
            return False
        if reader.next <= reader.arrived:
            batch = self.log.read(PARTITION, reader.next, 0)
            for offset, _key, value in batch:
                if offset > reader.arrived:
                    break
                record = lease.decode(value)
                actions += node.core.on_record(offset, record, now)
                node.read_through = offset
                reader.next = offset + 1
        if reader.next > reader.announced:
            actions += node.core.on_caught_up(reader.next, now)
        return True

    def _carry_out(self, node: _Node, t: float, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(node, t, action.record)
            elif isinstance(action, Elected):
                self._on_elected(node, t, action)
            elif isinstance(action, Revoked):
                self._note(t, node, f"revoked term {action.term} ({action.reason})")
                self.revocations.append(
                    Revocation(
                        t, node.name, node.incarnation, action.term, action.reason
                    )
                )
            elif isinstance(action, Resync):
                self._note(t, node, f"resyncs ({action.reason})")
                self._open(node, t)

    def _wake(self, node: _Node, t: float) -> None:
        now = node.clock(t)
        at = node.to_global(node.core.next_wakeup(now))
        if at <= t:
            at = math.nextafter(t, math.inf)
        node.wake_at = at

        def run(when: float) -> None:
            if node.wake_at == when:
                self._step(node, when)

        self._push(at, self._for_process(node, run))

    # -- the log -------------------------------------------------------------

    def _send(self, node: _Node, t: float, record: LeaseRecord) -> None:
        what = _describe(record)
        if node.write_cut_by:
            cut = next(iter(node.write_cut_by.values()))
            if cut.fate == "vanish":
                self._note(t, node, f"sends {what}: vanishes")
                return
            landed = self.rng.random() < 0.5
            self._note(t, node, f"sends {what}: outcome unknown (lands: {landed})")
            if landed:
                latency = self._jitter(node.profile.write_latency)
                self._push_append(t + latency, record)
            writer = node.writer

            def failed(when: float) -> None:
                if node.writer == writer:
                    node.failures.append(record)
                    self._step(node, when)

            self._push(t + cut.delay, self._for_process(node, failed))
            return
        latency = self._jitter(node.profile.write_latency)
        latency += sum(delay.delay for delay in node.delayed_by.values())
        self._note(t, node, f"sends {what}, lands at {t + latency:.6f}")
        self._push_append(t + latency, record)
        for dup in node.duplicated_by.values():
            again = t + latency + dup.delay
            self._push_append(again, record)

    def _push_append(self, t: float, record: LeaseRecord) -> None:
        self._bases_in_flight[record.folded_through + 1] += 1
        self._push(t, lambda when: self._append(record, when))

    def _append(self, record: LeaseRecord, t: float) -> None:
        self._bases_in_flight[record.folded_through + 1] -= 1
        offset = self.log.append(PARTITION, KEY, lease.encode(record))
        self._appended_at.append(t)
        self._records.append(record)
        before = self._folded[-1] if self._folded else INITIAL
        state = lease.fold(before, offset, record)
        self._folded.append(state)
        self.trace.append(f"{t:.6f} log {offset}: {_describe(record)}")
        if state.term < before.term:
            self._fail(
                "terms grow", f"the log's term went {before.term} -> {state.term}"
            )
        if state.last_offset == offset and isinstance(record, lease.Claim):
            assert state.holder is not None and state.incarnation is not None
            if state.term in self._winners:
                self._fail("one winner per term", f"term {state.term} won twice")
            self._winners[state.term] = (state.holder, state.incarnation)
        for node in self.nodes:
            reader = node.reader
            if not node.alive or reader is None:
                continue
            arrival = max(
                reader.last_arrival, t + self._jitter(node.profile.read_latency)
            )
            reader.last_arrival = arrival
            reader.announced = offset
            run = self._for_process(node, self._arrive(node, reader, offset))
            self._push(arrival, run)

    # -- faults --------------------------------------------------------------

    def _start(self, index: int, t: float) -> None:
        fault = self.schedule.faults[index]
        node = self.nodes[fault.candidate]
        self.trace.append(f"{t:.6f} fault {index} starts: {fault!r}")
        if fault.kind == "cut":
            if fault.mode in ("both", "read"):
                node.read_cut_by.add(index)
            if fault.mode in ("both", "write"):
                node.write_cut_by[index] = fault
        elif fault.kind == "delay":
            node.delayed_by[index] = fault
        elif fault.kind == "duplicate":
            node.duplicated_by[index] = fault
        elif fault.kind == "rewind":
            if node.reader is not None:
                low, _ = self.log.bounds(PARTITION)
                first = max(low, node.core.view.low, node.reader.next - fault.count)
                node.reader.next = min(node.reader.next, first)
            self._step(node, t)
        elif fault.kind == "crash":
            if node.alive:
                self._crash(node, index, t)
        elif fault.kind == "pause":
            if node.alive:
                node.paused_by.add(index)
        elif fault.kind == "resign":
            node.commands.append("resign")
            self._step(node, t)
            node.commands.clear()  # a paused or dead process hears nothing
        elif fault.kind == "trim":
            self.log.trim(
                PARTITION, self._retained_from(t - fault.delay, fault.mode != "time")
            )

    def _retained_from(self, older: float, assumed: bool) -> int:
        """The first offset retention keeps when deleting records appended
        before ``older``; if ``assumed``, also what the retention assumption
        of the module text keeps."""
        low, end = self.log.bounds(PARTITION)
        keep = [bisect.bisect_left(self._appended_at, older)]
        if assumed:
            keep += [r.folded_through + 1 for r in self._records[keep[0] : end]]
            keep += [b for b, n in self._bases_in_flight.items() if n > 0]
            keep += [
                node.core.folded_through + 1
                for node in self.nodes
                if node.alive and node.reader is not None
            ]
        return max(low, min(keep))

    def _finish(self, index: int, t: float) -> None:
        fault = self.schedule.faults[index]
        node = self.nodes[fault.candidate]
        self.trace.append(f"{t:.6f} fault {index} ends")
        node.read_cut_by.discard(index)
        node.write_cut_by.pop(index, None)
        node.delayed_by.pop(index, None)
        node.duplicated_by.pop(index, None)
        if fault.kind == "crash" and node.down_by == index:
            self._restart(node, t)
        elif fault.kind == "pause" and index in node.paused_by:
            node.paused_by.discard(index)
            # Resumed, the application may act before the elector has handled
            # what queued up: whatever is_leader says now, it acts on.
            self._check_instant(t)
        self._step(node, t)

    def _crash(self, node: _Node, index: int, t: float) -> None:
        node.alive = False
        node.down_by = index
        node.process += 1
        node.paused_by.clear()
        node.failures.clear()
        node.reader = None
        self._note(t, node, "crashes")

    def _restart(self, node: _Node, t: float) -> None:
        node.alive = True
        node.down_by = None
        node.incarnations += 1
        node.core = self._candidate(node.name, node.incarnations)
        self._open(node, t)
        self._note(t, node, f"restarts as {node.incarnation}")

    # -- checks --------------------------------------------------------------

    def _on_elected(self, node: _Node, t: float, elected: Elected) -> None:
        term = elected.term
        me = (node.name, node.incarnation)
        self._note(t, node, f"elected for term {term}")
        self.elections.append(Election(t, node.name, node.incarnation, term))
        other = self._elected.setdefault(term, me)
        if other != me:
            self._fail("one leader per term", f"term {term}: {other} and {me}")
        if self._winners.get(term) != me:
            self._fail(
                "won before leading",
                f"{me} elected for term {term}, whose winning claim in the log "
                f"is {self._winners.get(term)}",
            )
        if term <= node.max_elected:
            self._fail(
                "terms grow",
                f"{node.name} elected for term {term} after term {node.max_elected}",
            )
        node.max_elected = term

    def _check_view(self, node: _Node, t: float) -> None:
        state = node.core.state
        if state is None or node.read_through < 0:
            return
        if state.term < node.max_term:
            self._fail(
                "terms grow",
                f"{node.name} saw term {node.max_term}, then term {state.term}",
            )
        node.max_term = state.term
        expected = self._folded[node.read_through]
        if state != expected:
            self._fail(
                "same state",
                f"{node.name} through offset {node.read_through} has {state}, "
                f"the log's fold has {expected}",
            )

    def _check_instant(self, t: float) -> None:
        acting = [
            node
            for node in self.nodes
            if node.running and node.core.is_leader(node.clock(t))
        ]
        if len(acting) > 1:
            names = " and ".join(node.name for node in acting)
            self._fail("no overlap", f"{names} both act as leader")
        for node in self.nodes:
            if node in acting:
                if node.acting_until < t:  # it starts acting now
                    before = max(
                        (o.acting_until for o in self.nodes if o is not node),
                        default=-math.inf,
                    )
                    self.closest = min(self.closest, t - before)
                node.acting_until = node.to_global(node.core.deadline)
                self.acted_at = t
            else:
                node.acting_until = min(node.acting_until, t)

    def _note(self, t: float, node: _Node, what: str) -> None:
        self.trace.append(f"{t:.6f} {node.incarnation} {what}")

    def _fail(self, rule: str, detail: str) -> None:
        tail = "\n".join(self.trace[-40:])
        raise Violation(
            f"[{rule}] at t={self.now:.6f}: {detail}\n"
            f"replay: nccoord.sim.replay({self.seed}, "
            f"nccoord.sim.Schedule.from_json({self.schedule.to_json()!r}))\n"
            f"last events:\n{tail}"
        )


def _describe(record: LeaseRecord) -> str:
    if isinstance(record, lease.Claim):
        fresh = f" fresh base {record.base}" if record.base is not None else ""
        return (
            f"claim term {record.term} prev_seq {record.prev_seq}{fresh} "
            f"by {record.incarnation}"
        )
    if isinstance(record, lease.Renew):
        return f"renew term {record.term} seq {record.seq} by {record.incarnation}"
    return f"release term {record.term} by {record.incarnation}"


def random_schedule(
    rng: random.Random,
    *,
    candidates: int | None = None,
    faults: int | None = None,
    horizon: float = 20.0,
    timing: Timing | None = None,
) -> Schedule:
    """A schedule drawn uniformly: clocks within the drift bound, every
    kind of fault, each fault's fields spread over their whole range."""
    timing = timing or Timing()
    lease_ = timing.lease
    slow, fast = rate_bounds(timing.drift)
    n = candidates or rng.randint(2, 5)
    profiles = tuple(
        Profile(
            rate=rng.uniform(slow, fast),
            offset=rng.uniform(0, 10_000),
            write_latency=rng.uniform(0.001, 0.1 * lease_),
            read_latency=rng.uniform(0.001, 0.1 * lease_),
        )
        for _ in range(n)
    )
    chosen = [
        _random_fault(rng, n, horizon, lease_)
        for _ in range(rng.randint(0, 12) if faults is None else faults)
    ]
    return Schedule(
        profiles=profiles,
        faults=tuple(sorted(chosen, key=lambda fault: fault.at)),
        lease=timing.lease,
        drift=timing.drift,
        margin=timing.margin,
        renew_every=timing.renew_every,
        jitter=rng.uniform(0, 0.9),
    )


def _random_fault(rng: random.Random, n: int, horizon: float, lease_: float) -> Fault:
    kind = rng.choice(FAULT_KINDS)
    return Fault(
        at=rng.uniform(0, horizon),
        kind=kind,
        candidate=rng.randrange(n),
        duration=rng.uniform(0, 3 * lease_),
        mode=rng.choice(("both", "read", "write")),
        fate=rng.choice(("fail", "vanish")),
        # A trim keeps more than a leader's budget (see the module text).
        delay=rng.uniform(lease_, 4 * lease_)
        if kind == "trim"
        else rng.uniform(0, 2 * lease_),
        count=rng.randint(1, 12),
    )


def replay(seed: int, schedule: Schedule) -> Simulator:
    """Run ``schedule`` from ``seed`` to its end; raises :class:`Violation`."""
    return Simulator(seed, schedule).run()
