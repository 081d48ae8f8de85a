"""An agent's coordination services over Kafka, on one thread.

:class:`Coordinator` wires the pure rules of :mod:`nccoord.consensus`,
:mod:`nccoord.membership`, :mod:`nccoord.overrides` and
:mod:`nccoord.control` to the bus, the elector and the fenced producer:

- it registers the agent on ``system-status`` and sends heartbeats;
- it folds heartbeats into a membership view and, while it leads, announces
  each transition (``health`` status updates of the agent concerned, with
  ``detail`` starting ``membership:``);
- it counts proposals and, while it leads, decides rounds and writes the
  results to ``system-broadcast`` through the fenced producer, in the
  group's partition, with CloudEvents headers and the term;
- it folds results from that partition (committed ones only) and tells the
  application each accepted result;
- it keeps the override book and calls the control handlers.

Reading: status, overrides and results are read from the start of their
topics (they are state); heartbeats and control signals from the moment the
agent starts (they are live: a command sent before an agent started is not
for it).

Callbacks run on the coordinator's thread; they must not block for long.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from . import headers as hdr
from .bus import Publisher, Subscriber
from .candidate import Timing
from .consensus import (
    Ballots,
    Decision,
    Leader,
    Majority,
    Proposal,
    Result,
    Rule,
    Verdict,
)
from .consensus import Results as ResultFold
from .control import Command, ControlHandler, ControlRouter, resign_on_failover
from .elector import Elector
from .errors import EventError, NccoordError, TransportError
from .events import (
    Broadcast,
    ControlSignal,
    Heartbeat,
    Override,
    OverrideRevoke,
    Scalar,
    StatusUpdate,
    validate,
)
from .fencing import TERM_HEADER, FencedProducer, NotLeaderError
from .kafka_log import consumer_config
from .log import partition_for
from .membership import (
    STATES,
    Announcements,
    Membership,
    MembershipTiming,
    Transition,
)
from .overrides import ActiveOverride, Outcome, OverrideBook, utc_now
from .roles import RolePublisher
from .topics import TopicNames

if TYPE_CHECKING:
    from .signing import Verifier

logger = logging.getLogger(__name__)

MEMBERSHIP_DETAIL = "membership:"

ResultCallback = Callable[[Result], object]
OverrideCallback = Callable[[Outcome], object]
TransitionCallback = Callable[[Transition], object]
StatusCallback = Callable[[StatusUpdate], object]


class ResultReader:
    """Reads one partition of the broadcast topic, committed records only."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partition: int,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self._tp = TopicPartition(topic, partition)
        self._consumer = Consumer(consumer_config(bootstrap, client_config))
        self._consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        self._next = 0

    def poll(self, timeout: float) -> list[tuple[int, Broadcast, hdr.EventMeta]]:
        """Broadcasts read, with their offsets; undecodable records are skipped."""
        try:
            messages = self._consumer.consume(500, timeout)
        except KafkaException as exc:
            raise TransportError(f"cannot read {self.topic}: {exc}") from exc
        read = []
        for message in messages:
            error, offset = message.error(), message.offset()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and offset is not None:
                    self._next = max(self._next, offset)
                elif error.fatal():
                    raise TransportError(f"reading {self.topic}: {error.str()}")
                continue
            assert offset is not None
            self._next = max(self._next, offset + 1)
            raw = message.headers()
            headers = list(raw.items()) if isinstance(raw, dict) else raw
            try:
                event, meta = hdr.decode_record(headers, message.value())
                if not isinstance(event, Broadcast):
                    raise EventError(f"{meta.type} is not a broadcast", hdr.TYPE)
                _check_term(event, headers)
            except EventError as exc:
                # Marked shortcoming: logged and skipped, not dead-lettered here;
                # the bus's subscribers dead-letter the same records.
                logger.warning("skipping %s@%d: %s", self.topic, offset, exc)
                continue
            read.append((offset, event, meta))
        return read

    def end(self) -> int:
        """The partition's end now (for a read_committed reader, its stable end)."""
        try:
            _, high = self._consumer.get_watermark_offsets(
                self._tp, timeout=10, cached=False
            )
        except KafkaException as exc:
            raise TransportError(f"cannot read the end of {self.topic}") from exc
        return int(high)

    def reached(self, end: int) -> bool:
        """True once everything before offset ``end`` has been read."""
        return self._next >= end

    def close(self) -> None:
        self._consumer.close()


def _check_term(event: Broadcast, raw: hdr.RawHeaders | None) -> None:
    if event.kind != "consensus-result":
        return
    stamped = hdr.header_text(raw, TERM_HEADER)
    if stamped is None or stamped != str(event.term):
        raise EventError(
            f"term {event.term} does not match the {TERM_HEADER} header {stamped!r}",
            "term",
        )


class Coordinator:
    """One agent of one group: elector, heartbeats, membership, consensus,
    overrides and control, over a Kafka cluster.

    Use::

        coordinator = Coordinator("127.0.0.1:9092", group="pricing", agent="a1")
        coordinator.on_result(lambda result: print(result.round, result.value))
        coordinator.on_control("reboot", lambda signal, meta: restart())
        coordinator.start()
        coordinator.propose(1, "blue")
        coordinator.value("strategy-alpha", "threshold-adjustment", default=0.5)
        coordinator.close()
    """

    def __init__(
        self,
        bootstrap: str,
        group: str,
        agent: str,
        *,
        names: TopicNames | None = None,
        timing: Timing | None = None,
        membership: MembershipTiming | None = None,
        rule: Rule | None = None,
        verifier: Verifier | None = None,
        capabilities: Iterable[str] = (),
        client_config: Mapping[str, Any] | None = None,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.agent = agent
        self.names = names or TopicNames()
        self.rule: Rule = rule or Majority()
        self.wall_clock = wall_clock
        self.capabilities = list(capabilities)
        self.membership = Membership(membership)
        self.ballots = Ballots()
        self.results = ResultFold()
        self.overrides = OverrideBook(verifier)
        self.router = ControlRouter(agent, group)
        self._announced = Announcements()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client_config = dict(client_config or {})
        self._result_callbacks: list[ResultCallback] = []
        self._override_callbacks: list[OverrideCallback] = []
        self._transition_callbacks: list[TransitionCallback] = []
        self._status_callbacks: list[StatusCallback] = []
        self._leader: Leader | None = None
        self._catching_up: tuple[int, int] | None = None
        self._next_beat = 0.0
        self.publisher = Publisher(bootstrap, name=agent, names=self.names, linger_ms=0)
        self.elector = Elector.over_kafka(
            bootstrap,
            group,
            agent,
            topics=self.names,
            timing=timing,
            client_config=client_config,
            role_changes=RolePublisher(self.publisher),
        )
        self.fenced = FencedProducer(
            self.elector,
            bootstrap,
            transactional_id_prefix=self.names.prefix,
            client_config=client_config,
        )
        self.router.on("failover", resign_on_failover(self.elector))
        self._ready = threading.Event()
        self._state = Subscriber(
            bootstrap,
            f"nccoord-{agent}-state-{uuid.uuid4().hex[:12]}",
            names=self.names,
            config=self._client_config,
        )
        self._state.on(StatusUpdate, self._on_status)
        self._state.on(Override, self._on_override)
        self._state.on(OverrideRevoke, self._on_revoke)
        self._pulse = Subscriber(
            bootstrap,
            f"nccoord-{agent}-pulse-{uuid.uuid4().hex[:12]}",
            names=self.names,
            config={**self._client_config, "auto.offset.reset": "latest"},
        )
        self._pulse.on(Heartbeat, self._on_heartbeat)
        self._pulse.on(ControlSignal, self._on_control)
        # Results go to the group's partition, as the lease log's records do,
        # so one reader of one partition sees every result of the group.
        self._partition = partition_for(self.group, self._broadcast_partitions())
        self._reader = ResultReader(
            bootstrap, self.names.broadcast, self._partition, self._client_config
        )

    # -- the application's side ----------------------------------------------

    def on_result(self, callback: ResultCallback) -> None:
        """Call ``callback(result)`` for every accepted result, in log order."""
        self._result_callbacks.append(callback)

    def on_override(self, callback: OverrideCallback) -> None:
        """Call ``callback(outcome)`` for each override or revoke read or expiry."""
        self._override_callbacks.append(callback)

    def on_transition(self, callback: TransitionCallback) -> None:
        """Call ``callback(transition)`` for each membership change seen."""
        self._transition_callbacks.append(callback)

    def on_status(self, callback: StatusCallback) -> None:
        """Call ``callback(update)`` for every status update read."""
        self._status_callbacks.append(callback)

    def on_control(self, signal: Command, handler: ControlHandler) -> None:
        """Call ``handler(signal, meta)`` for each command addressed here."""
        self.router.on(signal, handler)

    def start(self) -> None:
        """Register, start the elector and the coordinator's thread."""
        if self._thread is not None:
            raise NccoordError("coordinator already started")
        self.publisher.publish(
            StatusUpdate(
                agent_id=self.agent,
                timestamp=self.wall_clock(),
                kind="registration",
                group=self.group,
                capabilities=self.capabilities or None,
            )
        )
        self.elector.start()
        self._thread = threading.Thread(
            target=self._run, name=f"coordinator-{self.agent}", daemon=True
        )
        self._thread.start()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the agent reads its own heartbeats (live topics assigned)."""
        return self._ready.wait(timeout)

    def propose(self, round: int, value: Scalar) -> None:
        """Propose ``value`` for ``round`` of the group."""
        self.publisher.publish(
            StatusUpdate(
                agent_id=self.agent,
                timestamp=self.wall_clock(),
                kind="proposal",
                group=self.group,
                round=round,
                value=value,
            )
        )

    def report(self, update: StatusUpdate) -> None:
        """Publish a status update of this agent (health, plugin, env-sync)."""
        self.publisher.publish(update)

    def decided(self) -> dict[int, Result]:
        """Every accepted result of the group so far, by round."""
        with self._lock:
            return self.results.decided(self.group)

    def in_force(self, target: str) -> list[ActiveOverride]:
        """The overrides in force for ``target`` now."""
        with self._lock:
            return self.overrides.in_force(target, self.wall_clock())

    def value(self, target: str, type: str, default: Scalar = None) -> Scalar:
        """The value the newest override of ``type`` for ``target`` sets now."""
        with self._lock:
            return self.overrides.value(target, type, self.wall_clock(), default)

    def members(self) -> frozenset[str]:
        """The group's live members as this agent sees them."""
        with self._lock:
            return self.membership.members(self.group)

    def close(self, resign: bool = True) -> None:
        """Stop; a leader resigns first (``resign``) so the next one starts at once."""
        if resign and self.elector.is_leader():
            try:
                self.elector.resign()
            except NccoordError as exc:
                logger.debug("resign on close: %s", exc)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.elector.close()
        self.fenced.close()
        self._state.close()
        self._pulse.close()
        self._reader.close()
        self.publisher.close(10)

    def __enter__(self) -> Coordinator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- handlers (on the coordinator's thread) ------------------------------

    def _on_status(self, update: StatusUpdate, meta: hdr.EventMeta) -> None:
        with self._lock:
            if update.kind == "registration":
                self.membership.register(update.agent_id, update.group)
            elif update.kind == "proposal" and update.group == self.group:
                proposal = Proposal.from_status(update)
                if self.results.get(self.group, proposal.round) is None:
                    self.ballots.add(proposal)
            elif _is_announcement(update):
                self._announced.seen(update.agent_id, update.status)  # type: ignore[arg-type]
        self._call(self._status_callbacks, update)

    def _on_override(self, override: Override, meta: hdr.EventMeta) -> None:
        with self._lock:
            outcome = self.overrides.offer(override, self.wall_clock(), meta.id)
        self._call(self._override_callbacks, outcome)

    def _on_revoke(self, revoke: OverrideRevoke, meta: hdr.EventMeta) -> None:
        with self._lock:
            outcome = self.overrides.revoke(revoke, self.wall_clock())
        self._call(self._override_callbacks, outcome)

    def _on_heartbeat(self, beat: Heartbeat, meta: hdr.EventMeta) -> None:
        interval = beat.interval_seconds
        with self._lock:
            changes = self.membership.heartbeat(
                beat.agent_id,
                time.monotonic(),
                beat.status,
                float(interval) if interval is not None else None,
            )
        if beat.agent_id == self.agent:
            self._ready.set()
        self._transitions(changes)

    def _on_control(self, signal: ControlSignal, meta: hdr.EventMeta) -> None:
        try:
            self.router.dispatch(signal, meta)
        except Exception:
            logger.exception("control handler for %s failed", signal.signal)

    def _call(self, callbacks: list[Callable[[Any], object]], arg: object) -> None:
        for callback in callbacks:
            try:
                callback(arg)
            except Exception:
                logger.exception("callback %r failed", callback)

    # -- the coordinator's thread --------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except NccoordError as exc:
                logger.warning("agent %s: %s", self.agent, exc)
                self._stop.wait(0.2)
            except Exception:
                logger.exception("agent %s: coordinator step failed", self.agent)
                self._stop.wait(0.2)

    def _step(self) -> None:
        now = time.monotonic()
        if now >= self._next_beat:
            self._beat()
            self._next_beat = now + self.membership.timing.interval
        self._state.poll(0.05)
        self._pulse.poll(0.0)
        for offset, event, _meta in self._reader.poll(0.0):
            self._on_broadcast(offset, event)
        with self._lock:
            changes = self.membership.tick(time.monotonic())
            expired = self.overrides.expire(self.wall_clock())
        self._transitions(changes)
        for active in expired:
            self._call(
                self._override_callbacks, Outcome(True, "expired", active.id, active)
            )
        self._lead()

    def _beat(self) -> None:
        self.publisher.publish(
            Heartbeat(
                agent_id=self.agent,
                timestamp=self.wall_clock(),
                status="healthy",
                interval_seconds=self.membership.timing.interval,
            )
        )

    def _on_broadcast(self, offset: int, event: Broadcast) -> None:
        if event.kind != "consensus-result" or event.group != self.group:
            return
        result = Result.from_broadcast(event)
        with self._lock:
            verdict = self.results.accept(result)
            if verdict is Verdict.ACCEPTED:
                self.ballots.close(self.group, result.round)
        logger.debug(
            "group %s round %d term %d at %d: %s",
            self.group,
            result.round,
            result.term,
            offset,
            verdict.value,
        )
        if verdict is Verdict.ACCEPTED:
            self._call(self._result_callbacks, result)

    def _transitions(self, changes: list[Transition]) -> None:
        for change in changes:
            self._call(self._transition_callbacks, change)

    def _lead(self) -> None:
        term = self.elector.term
        if term is None:
            if self._leader is not None or self._catching_up is not None:
                logger.info("group %s: %s stops deciding", self.group, self.agent)
            self._leader = self._catching_up = None
            return
        if self._leader is not None and self._leader.term == term:
            self._decide()
            self._announce()
            return
        if self._catching_up is None or self._catching_up[0] != term:
            # Take the fenced producer first: from then on no older leader can
            # commit, so reading to the end shows every round decided before.
            try:
                self.fenced.open()
            except NotLeaderError:
                return
            self._catching_up = (term, self._reader.end())
            logger.info(
                "group %s: %s leads term %d, reading results to offset %d",
                self.group,
                self.agent,
                term,
                self._catching_up[1],
            )
        if self._reader.reached(self._catching_up[1]):
            self._leader = Leader(self.group, term, self.rule)
            self._catching_up = None
            logger.info("group %s: %s decides from now", self.group, self.agent)

    def _decide(self) -> None:
        assert self._leader is not None
        with self._lock:
            members = self.membership.members(self.group)
            due = self._leader.due(self.ballots, self.results, members)
        for index, decision in enumerate(due):
            try:
                self._write(decision, self._leader.term)
            except NccoordError:
                for unwritten in due[index:]:
                    self._leader.failed(unwritten)
                raise

    def _write(self, decision: Decision, term: int) -> None:
        event = Broadcast(
            kind="consensus-result",
            timestamp=self.wall_clock(),
            agent_id=self.agent,
            group=decision.group,
            round=decision.round,
            term=term,
            value=decision.value,
            voters=list(decision.voters),
        )
        body = validate(event)
        meta = hdr.new_meta(
            event, id=str(uuid.uuid4()), source=self.publisher.source, sequence=None
        )
        headers = {
            name: value
            for name, value in hdr.to_headers(meta)
            if isinstance(value, bytes)
        }
        self.fenced.send(
            self.names.broadcast,
            [(self.group.encode(), body)],
            headers,
            partition=self._partition,
        )
        logger.info(
            "group %s: round %d decided %r by term %d (voters %s)",
            self.group,
            decision.round,
            decision.value,
            term,
            ",".join(decision.voters),
        )

    def _announce(self) -> None:
        with self._lock:
            due = self._announced.due(self.membership, self.group)
            for agent, state in due:
                self._announced.seen(agent, state)
        for agent, state in due:
            self.publisher.publish(
                StatusUpdate(
                    agent_id=agent,
                    timestamp=self.wall_clock(),
                    kind="health",
                    status=state,
                    group=self.group,
                    detail=f"{MEMBERSHIP_DETAIL} {state}, seen by {self.agent}",
                )
            )

    def _broadcast_partitions(self) -> int:
        from .kafka_log import KafkaLog

        return KafkaLog(self.bootstrap, self.names.broadcast).partitions


def _is_announcement(update: StatusUpdate) -> bool:
    return (
        update.kind == "health"
        and update.status in STATES
        and (update.detail or "").startswith(MEMBERSHIP_DETAIL)
    )
