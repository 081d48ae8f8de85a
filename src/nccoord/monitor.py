"""What an operator sees: leaders, agents, overrides and results, from the logs.

:class:`ClusterView` folds what a reader of the system topics reads into a
:class:`Snapshot`: every group's lease records (through the same pure fold
the candidates use, :class:`nccoord.lease.GroupView`) and the typed events.
It does no I/O, and its folds read no clock: each record comes with the
readings of the monotonic and wall clocks at which it was read, and a
snapshot is taken at given readings (a snapshot given no wall reading
takes the current time, which only times overrides).
:class:`ClusterFollower` reads a Kafka cluster on a thread and feeds a
view; ``nccoord watch``, ``nccoord dashboard`` and the metrics of
``nccoord demo`` are built on it.

What each panel means:

- *groups*: the holder and term of each group as the log shows them, and the
  lease left as a challenger would count it: the lease recorded in the log
  minus the time since this reader read the holder's latest counted record.
  Zero means a challenger may claim; it does not prove the holder stopped.
- *agents*: from heartbeats and ``registration`` status updates. An agent is
  ``alive`` until ``suspect_after`` heartbeat intervals pass without one,
  then ``suspect``, and ``dead`` after ``dead_after`` intervals. The age of
  a heartbeat read while catching up is taken from its timestamp; a display
  may lean on the wall clock, no decision here does.
- *overrides*: started (by their timestamp), not expired and not revoked.
  A signature is shown as present, not checked.
- *results*: the first consensus result per (group, round) in log order,
  ignoring a result of a lower term than one already read for the group.

Records read while catching up move the gauges but are not counted as
elections or failovers: those count what happened while the reader watched.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import headers as hdr
from . import lease, topics
from .bus import Deduplicator
from .consensus import Result
from .elector import RoleChange
from .errors import ConfigError, EventError, TransportError
from .events import (
    Broadcast,
    Event,
    Heartbeat,
    Override,
    OverrideRevoke,
    Scalar,
    StatusUpdate,
)
from .lease import GroupView
from .roles import derive
from .topics import TopicNames

if TYPE_CHECKING:
    from .metrics import Metrics

logger = logging.getLogger(__name__)


# -- what a snapshot holds ----------------------------------------------------


@dataclass(frozen=True)
class GroupRow:
    group: str
    leader: str | None
    term: int
    lease: float
    lease_left: float | None
    """Seconds; ``None`` when the term has no holder."""


@dataclass(frozen=True)
class AgentRow:
    agent: str
    state: str
    status: str | None
    last_heartbeat: float | None
    """Seconds since the agent's latest heartbeat; ``None`` before the first."""
    group: str | None


@dataclass(frozen=True)
class OverrideRow:
    target: str
    override_id: str
    type: str
    value: Scalar
    time_left: float
    issued_by: str | None
    signed: bool


@dataclass(frozen=True)
class ChangeRow:
    kind: str
    group: str
    agent: str
    term: int
    at: str
    """Wall-clock time (RFC 3339) at which this reader saw the change."""


@dataclass(frozen=True)
class Snapshot:
    """The cluster as one reader sees it at one moment."""

    groups: tuple[GroupRow, ...]
    agents: tuple[AgentRow, ...]
    overrides: tuple[OverrideRow, ...]
    results: tuple[Result, ...]
    changes: tuple[ChangeRow, ...]
    counts: Mapping[str, int]
    caught_up: bool
    at: str

    def leader_of(self, group: str) -> str | None:
        """The leader of ``group`` in this snapshot, if it shows one."""
        return next((g.leader for g in self.groups if g.group == group), None)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able data (lists, numbers, strings)."""
        return asdict(self)


# -- the fold -------------------------------------------------------------------


@dataclass
class _Group:
    view: GroupView
    read_at: float | None = None
    counting: bool = False


@dataclass
class _Agent:
    seen: float | None = None
    interval: float | None = None
    status: str | None = None
    group: str | None = None


@dataclass
class _InForce:
    event: Override
    override_id: str


@dataclass
class _Counts:
    events: int = 0
    duplicates: int = 0
    invalid: int = 0
    dead_letters: int = 0
    lease_records: int = 0


@dataclass
class ViewSettings:
    """How agents' states are judged and how much history a view keeps."""

    heartbeat_interval: float = 1.0
    suspect_after: float = 3.0
    dead_after: float = 6.0
    keep_results: int = 20
    keep_changes: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.suspect_after < self.dead_after:
            raise ConfigError("need 0 < suspect_after < dead_after")


class ClusterView:
    """The fold of everything one reader read; thread-safe, no I/O."""

    def __init__(
        self, settings: ViewSettings | None = None, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings or ViewSettings()
        self.metrics = metrics
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}
        self._partition_of: dict[str, int] = {}
        self._lows: dict[int, int] = {}
        self._caught_up: set[int] = set()
        self._agents: dict[str, _Agent] = {}
        self._overrides: dict[tuple[str, str], _InForce] = {}
        self._revoked: deque[tuple[str, str]] = deque(maxlen=10_000)
        self._results: dict[str, deque[Result]] = {}
        self._result_terms: dict[str, int] = {}
        self._decided: set[tuple[str, int]] = set()
        self._changes: deque[ChangeRow] = deque(maxlen=self.settings.keep_changes)
        self._dedup = Deduplicator()
        self._counts = _Counts()
        if metrics is not None:
            metrics.count_overrides(lambda: len(self.snapshot_overrides()))

    # -- the lease log ---------------------------------------------------------

    def lease_partition(self, partition: int, low: int) -> None:
        """The lease log's ``partition`` is readable from offset ``low``."""
        with self._lock:
            self._lows[partition] = low

    def lease_caught_up(self, partition: int) -> None:
        """The reader reached the end of a lease partition (at least once)."""
        with self._lock:
            self._caught_up.add(partition)
            for group, entry in self._groups.items():
                if self._partition_of[group] == partition:
                    entry.counting = True

    def lease_record(
        self,
        partition: int,
        offset: int,
        key: bytes,
        value: bytes,
        now: float,
        wall: datetime | None = None,
    ) -> list[RoleChange]:
        """Fold one record of the lease log read at monotonic time ``now``.

        ``wall`` (the wall-clock reading, for display only) stamps the role
        changes the record makes.
        """
        try:
            record = lease.decode(value)
        except EventError as exc:
            logger.debug("lease record at %d[%d] skipped: %s", partition, offset, exc)
            with self._lock:
                self._counts.invalid += 1
            return []
        group = record.group
        if key and key.decode(errors="replace") != group:
            logger.debug("lease record keyed %r names group %s", key, group)
        with self._lock:
            self._counts.lease_records += 1
            return self._fold_lease(partition, offset, record, now, wall)

    def _fold_lease(
        self,
        partition: int,
        offset: int,
        record: lease.LeaseRecord,
        now: float,
        wall: datetime | None,
    ) -> list[RoleChange]:
        group = record.group
        entry = self._groups.get(group)
        if entry is None:
            entry = _Group(GroupView(group, self._lows.get(partition, 0)))
            entry.counting = partition in self._caught_up
            self._groups[group] = entry
            self._partition_of[group] = partition
        before = entry.view.state
        after = entry.view.apply(offset, record)
        if after is None or after is before:
            return []
        if after.last_offset != (before.last_offset if before else None):
            entry.read_at = now
        changes = derive(group, before, after) if before is not None else []
        self._note_changes(changes, wall)
        if self.metrics is not None:
            self.metrics.leadership(group, before, after, count=entry.counting)
        return changes

    def _note_changes(self, changes: list[RoleChange], wall: datetime | None) -> None:
        at = wall.isoformat(timespec="seconds") if wall is not None else "-"
        for change in changes:
            logger.info(
                "group %s: %s %s term %d",
                change.group,
                change.agent,
                change.kind,
                change.term,
            )
            self._changes.append(
                ChangeRow(change.kind, change.group, change.agent, change.term, at)
            )

    # -- events ------------------------------------------------------------------

    def event(
        self,
        topic: str,
        partition: int,
        event: Event,
        meta: hdr.EventMeta,
        now: float,
        wall: datetime,
    ) -> None:
        """Fold one decoded event of system topic ``topic`` (base name)."""
        with self._lock:
            repeat = meta.sequence is not None and self._dedup.is_repeat(
                meta.source, topic, partition, meta.sequence
            )
            self._counts.events += 1
            if self.metrics is not None:
                self.metrics.consumed(topic, duplicate=repeat)
            if repeat:
                self._counts.duplicates += 1
                return
            if meta.sequence is not None:
                self._dedup.mark(meta.source, topic, partition, meta.sequence)
            self._fold_event(event, meta, now, wall)

    def _fold_event(
        self, event: Event, meta: hdr.EventMeta, now: float, wall: datetime
    ) -> None:
        if isinstance(event, Heartbeat):
            self._heartbeat(event, now, wall)
        elif isinstance(event, StatusUpdate):
            self._status(event)
        elif isinstance(event, Override):
            key = (event.target, event.override_id or meta.id)
            if key not in self._revoked:
                self._overrides[key] = _InForce(event, key[1])
        elif isinstance(event, OverrideRevoke):
            key = (event.target, event.override_id)
            if self._overrides.pop(key, None) is None:
                self._revoked.append(key)
        elif isinstance(event, Broadcast) and event.kind == "consensus-result":
            self._result(event)

    def _heartbeat(self, event: Heartbeat, now: float, wall: datetime) -> None:
        agent = self._agents.setdefault(event.agent_id, _Agent())
        age = max(0.0, (wall - event.timestamp).total_seconds())
        seen = now - age
        if agent.seen is None or seen >= agent.seen:
            agent.seen = seen
            agent.status = event.status
            if event.interval_seconds:
                agent.interval = float(event.interval_seconds)

    def _status(self, event: StatusUpdate) -> None:
        agent = self._agents.setdefault(event.agent_id, _Agent())
        if event.kind == "registration" and event.group is not None:
            agent.group = event.group
        elif event.kind == "health" and event.status is not None:
            agent.status = event.status

    def _result(self, event: Broadcast) -> None:
        result = Result.from_broadcast(event)
        group = result.group
        if result.term < self._result_terms.get(group, 0):
            return
        self._result_terms[group] = result.term
        if (group, result.round) in self._decided:
            return
        self._decided.add((group, result.round))
        keep = self.settings.keep_results
        self._results.setdefault(group, deque(maxlen=keep)).append(result)

    def invalid(self) -> None:
        """A record of an event topic could not be decoded or validated."""
        with self._lock:
            self._counts.invalid += 1

    def dead_letter(self, origin: str) -> None:
        """A record of ``origin`` (a topic's base name) was found dead-lettered."""
        with self._lock:
            self._counts.dead_letters += 1
        if self.metrics is not None:
            self.metrics.dead_lettered(origin)

    # -- snapshots ---------------------------------------------------------------

    def snapshot(self, now: float, wall: datetime | None = None) -> Snapshot:
        """The panels at monotonic time ``now`` and wall time ``wall`` (by
        default the wall clock now: overrides are timed by their timestamps).
        """
        wall = wall or datetime.now(UTC)
        with self._lock:
            return Snapshot(
                groups=tuple(self._group_rows(now)),
                agents=tuple(self._agent_rows(now)),
                overrides=tuple(self._override_rows(wall)),
                results=tuple(
                    row for rows in self._results.values() for row in reversed(rows)
                ),
                changes=tuple(reversed(self._changes)),
                counts=asdict(self._counts),
                caught_up=bool(self._lows) and self._caught_up >= set(self._lows),
                at=wall.isoformat(timespec="seconds"),
            )

    def snapshot_overrides(self, wall: datetime | None = None) -> list[OverrideRow]:
        """The overrides in force at ``wall`` (now by default)."""
        with self._lock:
            return self._override_rows(wall or datetime.now(UTC))

    def _group_rows(self, now: float) -> list[GroupRow]:
        rows = []
        for group, entry in sorted(self._groups.items()):
            state = entry.view.state
            if state is None:
                continue
            rows.append(GroupRow(group, state.holder, state.term, state.lease, None))
            if state.holder is not None and entry.read_at is not None:
                left = max(0.0, entry.read_at + state.lease - now)
                rows[-1] = GroupRow(
                    group, state.holder, state.term, state.lease, round(left, 2)
                )
        return rows

    def _agent_rows(self, now: float) -> list[AgentRow]:
        rows = []
        for name, agent in sorted(self._agents.items()):
            if agent.seen is None:
                rows.append(
                    AgentRow(name, "registered", agent.status, None, agent.group)
                )
                continue
            age = max(0.0, now - agent.seen)
            rows.append(
                AgentRow(
                    name,
                    self._state(agent, age),
                    agent.status,
                    round(age, 1),
                    agent.group,
                )
            )
        return rows

    def _state(self, agent: _Agent, age: float) -> str:
        missed = age / (agent.interval or self.settings.heartbeat_interval)
        if missed >= self.settings.dead_after:
            return "dead"
        if missed >= self.settings.suspect_after:
            return "suspect"
        return "alive"

    def _override_rows(self, wall: datetime) -> list[OverrideRow]:
        rows = []
        for key, entry in list(self._overrides.items()):
            event = entry.event
            left = (event.expires_at - wall).total_seconds()
            if left <= 0:
                del self._overrides[key]  # expired: it never comes back
                continue
            if event.timestamp > wall:
                continue  # not started yet
            rows.append(
                OverrideRow(
                    event.target,
                    entry.override_id,
                    event.override.type,
                    event.override.new_value,
                    round(left, 1),
                    event.issued_by,
                    event.signature is not None,
                )
            )
        return sorted(rows, key=lambda row: (row.target, row.time_left))


# -- reading a cluster ------------------------------------------------------------


@dataclass
class FollowerSettings:
    """Which topics a follower reads; the lease topic is always read."""

    names: TopicNames = field(default_factory=TopicNames)
    client_config: Mapping[str, Any] = field(default_factory=dict)
    poll_timeout: float = 0.2


class ClusterFollower:
    """Reads every partition of the system topics and feeds a :class:`ClusterView`.

    It reads from each partition's first retained record and keeps up with
    new ones on a thread of its own. It only reads: it commits nothing and
    writes no dead letters (records it cannot decode are counted).
    """

    def __init__(
        self,
        bootstrap: str,
        view: ClusterView | None = None,
        settings: FollowerSettings | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.view = view or ClusterView()
        self.settings = settings or FollowerSettings()
        self.error: BaseException | None = None
        self._bases = {self.settings.names.name(b): b for b in topics.ALL}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None

    def start(self) -> ClusterFollower:
        """Assign the partitions (raising if the lease topic is missing), then read."""
        self._consumer = self._assign()
        self._thread = threading.Thread(
            target=self._run, name="nccoord-follower", daemon=True
        )
        self._thread.start()
        return self

    def snapshot(self) -> Snapshot:
        return self.view.snapshot(time.monotonic(), datetime.now(UTC))

    def wait_caught_up(self, timeout: float) -> bool:
        """True once every lease partition was read to its end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.view.snapshot(time.monotonic()).caught_up:
                return True
            if self.error is not None:
                raise TransportError(f"follower stopped: {self.error}")
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        elif self._consumer is not None:
            self._consumer.close()

    def __enter__(self) -> ClusterFollower:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _assign(self) -> Any:
        from confluent_kafka import (
            OFFSET_BEGINNING,
            Consumer,
            KafkaException,
            TopicPartition,
        )

        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": f"nccoord-follower-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 100,
        }
        config.update(self.settings.client_config)
        consumer = Consumer(config)
        try:
            metadata = consumer.list_topics(timeout=10)
            lease_topic = self.settings.names.lease
            if lease_topic not in metadata.topics:
                raise ConfigError(
                    f"no topic {lease_topic} at {self.bootstrap}: create the system "
                    "topics (nccoord.ensure_topics) or check --prefix"
                )
            wanted = []
            for name, base in self._bases.items():
                found = metadata.topics.get(name)
                if found is None or found.error is not None:
                    logger.warning("topic %s not found; not reading it", name)
                    continue
                for partition in found.partitions:
                    wanted.append(TopicPartition(name, partition, OFFSET_BEGINNING))
                    if base == topics.LEASE:
                        low = _low_watermark(consumer, TopicPartition(name, partition))
                        self.view.lease_partition(partition, low)
            consumer.assign(wanted)
        except KafkaException as exc:
            consumer.close()
            raise TransportError(f"cannot read {self.bootstrap}: {exc}") from exc
        except BaseException:
            consumer.close()
            raise
        return consumer

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for message in self._consumer.consume(500, self.settings.poll_timeout):
                    self._take(message)
        except BaseException as exc:
            logger.exception("follower of %s failed", self.bootstrap)
            self.error = exc
        finally:
            self._consumer.close()

    def _take(self, message: Any) -> None:
        from confluent_kafka import KafkaError

        base = self._bases.get(message.topic(), "")
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                if base == topics.LEASE:
                    self.view.lease_caught_up(message.partition())
                return
            if error.fatal():
                raise TransportError(f"reading {message.topic()}: {error.str()}")
            logger.debug("reading %s: %s", message.topic(), error.str())
            return
        now = time.monotonic()
        if base == topics.LEASE:
            key = message.key() or b""
            value = message.value() or b""
            self.view.lease_record(
                message.partition(),
                message.offset(),
                key,
                value,
                now,
                datetime.now(UTC),
            )
        elif base == topics.DEADLETTER:
            origin = hdr.header_text(message.headers(), hdr.DLQ_TOPIC) or ""
            self.view.dead_letter(self._bases.get(origin, origin))
        else:
            self._event(base, message, now)

    def _event(self, base: str, message: Any, now: float) -> None:
        try:
            event, meta = hdr.decode_record(message.headers(), message.value())
        except EventError as exc:
            logger.debug("undecodable record on %s: %s", message.topic(), exc)
            self.view.invalid()
            return
        self.view.event(base, message.partition(), event, meta, now, datetime.now(UTC))


def _low_watermark(consumer: Any, partition: Any, timeout: float = 15.0) -> int:
    """The first readable offset, waiting out a partition that has no leader yet.

    A topic created a moment ago answers "not leader for partition" for a
    while; that and other retriable errors are retried until ``timeout``.
    """
    from confluent_kafka import KafkaError, KafkaException

    transient = {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
    }
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, _ = consumer.get_watermark_offsets(partition, timeout=5, cached=False)
            return max(int(low), 0)
        except KafkaException as exc:
            error = exc.args[0]
            again = error.retriable() or error.code() in transient
            if not again or time.monotonic() >= deadline:
                raise
            logger.debug("bounds of %s: %s; retrying", partition, error.str())
            time.sleep(0.2)
