"""The elector an agent embeds: the election rules driven over a real log.

:class:`Elector` runs one :class:`~nccoord.candidate.Candidate` on a thread
of its own: it reads the group's partition of the lease log, feeds what it
reads and the monotonic clock to the candidate, sends what the candidate
asks to send, and calls the application back when leadership begins or ends.
The current term is the fencing token: stamp it on every write made as
leader, and have readers refuse terms lower than one they have seen.

Typical use::

    elector = Elector.over_kafka("127.0.0.1:9092", group="billing", candidate="a1")
    elector.on_elected(lambda term: start_work(term))
    elector.on_revoked(lambda term, reason: stop_work())
    elector.start()
    ...
    elector.resign()   # hand over at once
    elector.close()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import lease
from .candidate import Action, Candidate, Elected, Resync, Revoked, Send, Timing
from .errors import ConfigError, EventError, NccoordError, TransportError
from .lease import LeaseRecord, LeaseState
from .log import Log, Reader, Writer, partition_for
from .topics import TopicNames

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
ElectedCallback = Callable[[int], None]
RevokedCallback = Callable[[int, str], None]


@dataclass(frozen=True)
class RoleChange:
    """A change of leader as the new (or resigning) leader reports it.

    ``kind`` is ``elected``, ``revoked``, ``resigned`` or ``expired``;
    ``agent`` is the candidate whose role changed and ``term`` the term it
    gained or left.
    """

    kind: str
    group: str
    agent: str
    term: int
    reason: str = ""


RoleChangeHook = Callable[[RoleChange], None]


class DeadLetterSink(Protocol):
    """Where undecodable lease records are copied, with the reason."""

    def put(
        self, partition: int, offset: int, key: bytes, value: bytes, error: EventError
    ) -> None: ...

    def close(self) -> None: ...


ChangeCallback = Callable[[LeaseState | None, LeaseState], None]
SentCallback = Callable[[LeaseRecord, float, Exception | None], None]


@dataclass(frozen=True)
class Leadership:
    """Who leads a group as far as the log shows, or that nobody does."""

    group: str
    term: int
    leader: str | None


class Elector:
    """Runs the election for one candidate of one group on a thread."""

    def __init__(
        self,
        log: Log,
        group: str,
        candidate: str,
        *,
        timing: Timing | None = None,
        clock: Clock = time.monotonic,
        incarnation: str | None = None,
        participate: bool = True,
        role_changes: RoleChangeHook | None = None,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        for name, value in (("group", group), ("candidate", candidate)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name}: must be a non-empty name, not {value!r}")
        self.log = log
        self.group = group
        self.candidate_id = candidate
        self.incarnation = incarnation or uuid.uuid4().hex
        self.clock = clock
        self._partition = partition_for(group, log.partitions)
        self._key = group.encode()
        self._core = Candidate(
            group, candidate, self.incarnation, timing, participate=participate
        )
        self._elected: list[ElectedCallback] = []
        self._revoked: list[RevokedCallback] = []
        self._role_changes = role_changes
        self._dead_letters = dead_letters
        self._changes: list[ChangeCallback] = []
        self._sent: list[SentCallback] = []
        self._lock = threading.RLock()
        self._commands: queue.SimpleQueue[
            tuple[Callable[[float], list[Action]], threading.Event]
        ] = queue.SimpleQueue()
        self._failures: queue.SimpleQueue[tuple[LeaseRecord, Exception]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: Reader | None = None
        self._writer: Writer | None = None
        self.error: BaseException | None = None

    @classmethod
    def over_kafka(
        cls,
        bootstrap: str,
        group: str,
        candidate: str,
        *,
        topics: TopicNames | None = None,
        client_config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Elector:
        """An elector on the ``system-lease`` topic of a Kafka cluster.

        Undecodable records of the group go to ``system-deadletter``.
        """
        from .kafka_log import KafkaDeadLetters, KafkaLog

        names = topics or TopicNames()
        kwargs.setdefault(
            "dead_letters",
            KafkaDeadLetters(bootstrap, names.deadletter, names.lease, client_config),
        )
        return cls(
            KafkaLog(bootstrap, names.lease, client_config=client_config),
            group,
            candidate,
            **kwargs,
        )

    # -- the application's side ----------------------------------------------

    def on_elected(self, callback: ElectedCallback) -> None:
        """Call ``callback(term)`` on the elector's thread when elected."""
        self._elected.append(callback)

    def on_revoked(self, callback: RevokedCallback) -> None:
        """Call ``callback(term, reason)`` when leadership ends, any reason."""
        self._revoked.append(callback)

    def start(self) -> None:
        """Begin reading the log and, if participating, campaigning."""
        if self._thread is not None:
            raise NccoordError(
                "elector already started (an elector runs once; make a new one)"
            )
        self._thread = threading.Thread(
            target=self._run,
            name=f"elector-{self.group}-{self.candidate_id}",
            daemon=True,
        )
        self._thread.start()

    def is_leader(self) -> bool:
        """True while this candidate may act as leader (deadline included)."""
        with self._lock:
            return self._core.is_leader(self.clock())

    @property
    def term(self) -> int | None:
        """The fencing token: the term this candidate leads now, else None."""
        with self._lock:
            if not self._core.is_leader(self.clock()):
                return None
            state = self._core.state
            return state.term if state is not None else None

    def leader_until(self) -> float | None:
        """The monotonic time at which this leader stops acting, if leading."""
        with self._lock:
            return self._core.deadline if self._core.is_leader(self.clock()) else None

    @property
    def caught_up(self) -> bool:
        """True once the elector has read its partition to the end."""
        with self._lock:
            return self._core.caught_up

    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback(before, after)`` whenever the folded state changes.

        ``before`` is ``None`` the first time the state becomes known. With
        :func:`nccoord.roles.derive` this gives an observer every role change.
        """
        self._changes.append(callback)

    def on_sent(self, callback: SentCallback) -> None:
        """Call ``callback(record, seconds, error)`` when a write's outcome is
        known: ``seconds`` from sending the lease record to the broker's answer.
        """
        self._sent.append(callback)

    def leadership(self) -> Leadership | None:
        """The leader and term this elector has read, or None before it knows."""
        with self._lock:
            state = self._core.state
        if state is None:
            return None
        return Leadership(self.group, state.term, state.holder)

    def resign(self, hold_off: float | None = None) -> None:
        """Stop leading and release the term; returns once the stop is done.

        The revoked callbacks have run when this returns; the Release record
        is on its way. The candidate stays out of the next ``hold_off``
        seconds of campaigning (one lease unless given).
        """
        self._command(lambda now: self._core.resign(now, hold_off))

    def step_down(self, why: str, reason: str = "fenced") -> None:
        """Stop leading now, e.g. because the broker fenced a leader's write.

        The revoked callbacks have run when this returns (unless it is called
        from one of the elector's own callbacks). The log is read again.
        """
        self._command(lambda now: self._core.lost_track(now, why, reason))

    def _command(self, command: Callable[[float], list[Action]]) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise NccoordError("elector is not running")
        done = threading.Event()
        self._commands.put((command, done))
        if threading.current_thread() is not self._thread:
            done.wait(10)

    def close(self) -> None:
        """Stop the thread; a leader is revoked (``closed``) but not released."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Elector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the elector's thread ------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        try:
            while not self._stop.is_set():
                try:
                    if self._reader is None:
                        self._open()
                    self._step()
                    backoff = 0.05
                except TransportError as exc:
                    self._trouble(exc)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 1.0)
        except BaseException as exc:
            logger.exception("elector %s/%s failed", self.group, self.candidate_id)
            self.error = exc
        finally:
            self._shut()

    def _trouble(self, exc: TransportError) -> None:
        """The log failed us: stop leading, drop the clients, try again."""
        with self._lock:
            actions = self._core.lost_track(self.clock(), str(exc))
        self._carry_out([a for a in actions if not isinstance(a, Resync)])
        self._close_clients()

    def _open(self) -> None:
        self._writer = self.log.open_writer()
        self._reader = self.log.open_reader(self._partition)
        with self._lock:
            self._core.restart(self._reader.low, self.clock())

    def _step(self) -> None:
        assert self._reader is not None and self._writer is not None
        with self._lock:
            wait = self._core.next_wakeup(self.clock()) - self.clock()
        batch = self._reader.poll(min(max(wait, 0.0), 0.05))
        actions: list[Action] = []
        with self._lock:
            for offset, key, value in batch.records:
                if key == self._key:
                    actions += self._read(offset, value)
            if batch.end is not None:
                actions += self._core.on_caught_up(batch.end, self.clock())
            self._writer.poll(0)
            while not self._failures.empty():
                record, error = self._failures.get()
                actions += self._core.on_send_failed(record, self.clock(), str(error))
            done = []
            while not self._commands.empty():
                command, event = self._commands.get()
                actions += command(self.clock())
                done.append(event)
            actions += self._core.tick(self.clock())
        self._carry_out(actions)
        for event in done:
            event.set()

    def _read(self, offset: int, value: bytes) -> list[Action]:
        try:
            record = lease.decode(value)
        except EventError as exc:
            self._dead_letter(offset, value, exc)
            return []
        before = self._core.state
        actions = self._core.on_record(offset, record, self.clock())
        after = self._core.state
        if after is not None and after is not before:
            for callback in self._changes:
                self._call(callback, before, after)
        return actions

    def _dead_letter(self, offset: int, value: bytes, error: EventError) -> None:
        """Skip an undecodable record; one copy of it goes to the dead letters.

        Every candidate reads the record, so the one the log names as holder
        copies it; while nobody holds the term, each candidate does (readers
        of dead letters can tell copies apart by their origin offset).
        """
        state = self._core.state
        copy = self._core.participate and (
            state is None
            or state.holder is None
            or state.held_by(self.candidate_id, self.incarnation)
        )
        logger.warning(
            "group %s: skipping undecodable lease record at offset %d%s: %s",
            self.group,
            offset,
            " (copied to dead letters)" if copy and self._dead_letters else "",
            error,
        )
        if copy and self._dead_letters is not None:
            self._dead_letters.put(self._partition, offset, self._key, value, error)

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(action.record)
            elif isinstance(action, Elected):
                self._announce_elected(action)
            elif isinstance(action, Revoked):
                self._announce_revoked(action.term, action.reason)
            elif isinstance(action, Resync):
                self._resync()

    def _send(self, record: LeaseRecord) -> None:
        if self._writer is None:
            # Between losing the log and reopening it: the record is simply
            # not sent, and the candidate never reads it back.
            return

        sent_at = self.clock()

        def done(error: Exception | None) -> None:
            if error is not None:
                self._failures.put((record, error))
            for callback in self._sent:
                self._call(callback, record, self.clock() - sent_at, error)

        self._writer.send(self._partition, self._key, lease.encode(record), done)

    def _resync(self) -> None:
        """Rebuild the producer and read the log again from its start."""
        self._close_clients()
        self._open()

    def _close_clients(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            self._reader.close()
        self._writer = self._reader = None

    def _announce_elected(self, elected: Elected) -> None:
        # The new leader reports both sides of the change, so there is one
        # announcement of it however many agents watch the log.
        previous = elected.previous
        if self._role_changes is not None:
            if previous is not None and previous.holder is not None:
                self._call(
                    self._role_changes,
                    RoleChange(
                        "revoked",
                        self.group,
                        previous.holder,
                        previous.term,
                        reason=f"term {elected.term} claimed by {self.candidate_id}",
                    ),
                )
            self._call(
                self._role_changes,
                RoleChange("elected", self.group, self.candidate_id, elected.term),
            )
        for callback in self._elected:
            self._call(callback, elected.term)

    def _announce_revoked(self, term: int, reason: str) -> None:
        if self._role_changes is not None and reason in ("resigned", "expired"):
            change = RoleChange(reason, self.group, self.candidate_id, term)
            self._call(self._role_changes, change)
        for callback in self._revoked:
            self._call(callback, term, reason)

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        """Run an application callback; its failure must not stop the election."""
        try:
            callback(*args)
        except Exception:
            logger.exception(
                "group %s: %s callback %r failed",
                self.group,
                self.candidate_id,
                callback,
            )

    def _shut(self) -> None:
        with self._lock:
            actions = self._core.close()
        self._carry_out(actions)
        self._close_clients()
        if self._dead_letters is not None:
            self._dead_letters.close()
