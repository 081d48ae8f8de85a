"""Publisher and Subscriber: the event bus agents embed.

A :class:`Publisher` validates an event, routes it to its kind's topic with
its kind's key (so one agent's or target's events stay in order on one
partition), stamps CloudEvents headers with a per-source sequence number and
writes it with an idempotent producer (``acks=all``).

A :class:`Subscriber` reads the topics of the kinds it has handlers for and
calls the handlers with typed events. A record it cannot decode or validate
goes, unchanged, to ``system-deadletter`` with the reason and its origin in
headers; the subscriber then commits past it and keeps going.

Delivery is at least once. The subscriber drops a record whose source and
partition already delivered that sequence number (a producer retry, a
rebalance), but that memory is local: a subscriber restarted from its
committed offsets can see an event again, and a process that publishes the
same event twice from two publishers makes two events. Handlers must be
idempotent; the event id (``meta.id``) is the natural key for that.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import tenacity
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from . import headers as hdr
from .errors import (
    EventError,
    FencedError,
    NccoordError,
    OutcomeUnknownError,
    TransportError,
)
from .events import DEFAULT_MAX_BYTES, KINDS, Event, kind_of, validate
from .topics import TopicNames

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
Handler = Callable[[E, hdr.EventMeta], object]
Config = Mapping[str, str | int | float | bool]


def _producer_config(bootstrap: str, client_id: str, linger_ms: int) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        # librdkafka leaves idempotence off by default; acks=all goes with it.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
    }


def _delivery_error(err: KafkaError, topic: str) -> TransportError:
    code = err.code()
    if code == KafkaError._FENCED:
        return FencedError(f"write to {topic} fenced: {err.str()}")
    if code in (KafkaError._MSG_TIMED_OUT, KafkaError._FATAL) or err.fatal():
        return OutcomeUnknownError(
            f"write to {topic} may or may not be in the log: {err.str()}"
        )
    return TransportError(f"write to {topic} failed: {err.str()}")


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, BufferError):  # the local queue is full: wait and retry
        return True
    if isinstance(exc, KafkaException):
        err = exc.args[0]
        return isinstance(err, KafkaError) and err.retriable() and not err.fatal()
    return False


# How much of a record too large for the dead-letter topic is kept there.
DEAD_LETTER_HEAD = 64 * 1024


def route(event: Event, names: TopicNames | None = None) -> tuple[str, str | None]:
    """The topic and key of an event: the topic of its kind, and its key.

    A ``None`` key (an announcement without a group) lets the producer pick
    any partition.
    """
    return (names or TopicNames()).name(event.TOPIC), event.key()


class _Delivery:
    """The delivery report of one record, filled in from ``poll()``."""

    __slots__ = ("done", "error", "offset", "partition")

    def __init__(self) -> None:
        self.done = False
        self.error: KafkaError | None = None
        self.partition: int | None = None
        self.offset: int | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        self.done = True
        self.error = err
        if err is None:
            self.partition, self.offset = msg.partition(), msg.offset()


class _Writer:
    """An idempotent producer with retries of transient enqueue errors.

    librdkafka itself retries a sent record until ``message.timeout.ms``; what
    is left to the application is a full local queue or a retriable error when
    enqueuing, which are retried here with backoff. Fatal errors are not.
    """

    def __init__(self, config: dict[str, Any], attempts: int) -> None:
        self._producer = Producer(config)
        self._failures: list[TransportError] = []
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_transient),
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential(multiplier=0.05, max=2.0),
            before_sleep=self._before_retry,
            reraise=True,
        )

    def _before_retry(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        logger.debug("retrying a write (attempt %d): %r", state.attempt_number, exc)
        self._producer.poll(0)

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: hdr.HeaderList,
        callback: _Delivery | None = None,
    ) -> None:
        def produce() -> None:
            self._producer.produce(
                topic,
                value=value,
                key=key,
                headers=headers,
                on_delivery=callback or self._report,
            )

        try:
            try:
                produce()
            except (BufferError, KafkaException) as exc:
                # The first try goes without tenacity: it costs more than the
                # enqueue itself, and almost every enqueue succeeds at once.
                if not _is_transient(exc):
                    raise
                self._producer.poll(0.01)
                self._retrying(produce)
        except BufferError as exc:
            raise TransportError(f"local queue for {topic} stayed full") from exc
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError._FENCED:
                raise FencedError(f"write to {topic} fenced: {err.str()}") from exc
            raise TransportError(f"cannot write to {topic}: {exc}") from exc
        self._producer.poll(0)

    def _report(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failure = _delivery_error(err, str(msg.topic()))
            logger.warning("%s", failure)
            self._failures.append(failure)

    def wait(self, delivery: _Delivery, topic: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not delivery.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OutcomeUnknownError(
                    f"no delivery report from {topic} in {timeout}s"
                )
            self._producer.poll(min(left, 0.1))
        if delivery.error is not None:
            raise _delivery_error(delivery.error, topic)

    def flush(self, timeout: float) -> None:
        left = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if left:
            raise OutcomeUnknownError(f"{left} records not delivered within {timeout}s")
        if failures:
            raise failures[0]

    def poll(self, timeout: float) -> int:
        served: int = self._producer.poll(timeout)
        return served

    def close(self, timeout: float) -> None:
        """Flush, then release the producer; what a failed flush left is dropped."""
        try:
            self.flush(timeout)
        finally:
            self._producer.purge()
            self._producer.close()


class Publisher:
    """Publishes events to their topics with CloudEvents headers.

    ``name`` identifies the publishing agent or service; every Publisher
    instance adds a fresh incarnation id, and its sequence numbers start at 1,
    so ``ce_source`` plus ``ce_sequence`` identify a record for the
    deduplicator.

    Use it as a context manager, or call :meth:`close`, which flushes.
    It is safe to share between threads.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        name: str = "nccoord",
        names: TopicNames | None = None,
        config: Config | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        avro: bool = False,
        linger_ms: int = 5,
        attempts: int = 8,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.names = names or TopicNames()
        self.source = f"/nccoord/{name}/{uuid.uuid4().hex[:12]}"
        self.max_bytes = max_bytes
        self._avro = avro
        self._clock = clock
        self._sequence = 0
        self._lock = threading.Lock()
        settings = _producer_config(bootstrap, name, linger_ms)
        settings.update(config or {})
        self._writer = _Writer(settings, attempts)
        self._closed = False
        logger.debug("publisher %s on %s", self.source, bootstrap)

    def route(self, event: Event) -> tuple[str, str | None]:
        """The topic and key an event is written with."""
        return route(event, self.names)

    def publish(
        self,
        event: Event,
        chain_id: str | None = None,
        *,
        wait: bool = False,
        timeout: float = 30.0,
    ) -> hdr.EventMeta:
        """Validate, route and write one event; return its metadata.

        ``chain_id`` links it causally to earlier events (``eventChainId``).
        With ``wait`` the call returns only once the broker has the record, and
        raises :class:`TransportError` (or :class:`OutcomeUnknownError` when
        the record may or may not be in the log) otherwise; without it, a
        failed delivery is raised by the next :meth:`flush` or :meth:`close`.
        """
        if self._closed:
            raise TransportError("publisher is closed")
        body = validate(event, max_bytes=self.max_bytes)
        if self._avro:
            from .avro import validate_avro

            validate_avro(event)
        topic, key = self.route(event)
        delivery = _Delivery() if wait else None
        # The sequence is taken and the record enqueued under one lock, so the
        # sequence numbers of one partition grow in log order.
        with self._lock:
            self._sequence += 1
            meta = hdr.new_meta(
                event,
                id=str(uuid.uuid4()),
                source=self.source,
                sequence=self._sequence,
                chain_id=chain_id,
                time=self._clock() if self._clock else None,
            )
            self._writer.send(
                topic,
                body,
                key.encode() if key is not None else None,
                hdr.to_headers(meta),
                delivery,
            )
        if delivery is not None:
            self._writer.wait(delivery, topic, timeout)
        logger.debug("published %s %s to %s key=%s", meta.type, meta.id, topic, key)
        return meta

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return self._writer.poll(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every record; raise the first delivery failure, if any."""
        self._writer.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush and stop accepting events."""
        if self._closed:
            return
        self._closed = True
        self._writer.close(timeout)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Deduplicator:
    """Remembers the last sequence number per (source, topic, partition).

    One publisher's records reach a partition in the order of their sequence
    numbers, so a number not above the last one delivered from that source on
    that partition is a repeat. Memory is one integer per source and partition;
    the least recently seen sources are forgotten past ``max_sources``.
    """

    def __init__(self, max_sources: int = 100_000) -> None:
        self._last: OrderedDict[tuple[str, str, int], int] = OrderedDict()
        self._max = max_sources

    def __len__(self) -> int:
        return len(self._last)

    def is_repeat(self, source: str, topic: str, partition: int, sequence: int) -> bool:
        last = self._last.get((source, topic, partition))
        return last is not None and sequence <= last

    def mark(self, source: str, topic: str, partition: int, sequence: int) -> None:
        slot = (source, topic, partition)
        self._last[slot] = max(sequence, self._last.get(slot, 0))
        self._last.move_to_end(slot)
        if len(self._last) > self._max:
            self._last.popitem(last=False)


@dataclass
class SubscriberStats:
    """What a subscriber did with the records it read."""

    delivered: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    ignored: int = 0


class Subscriber:
    """Reads system topics and calls typed handlers per event kind.

    Register handlers with :meth:`on`, then call :meth:`poll` in a loop or
    :meth:`run`. Offsets are committed only for records that were handled,
    dropped as repeats, ignored (no handler for their kind) or dead-lettered.
    A handler that raises stops :meth:`poll` with its exception; that record
    and the unprocessed ones after it are read again by the next poll.
    """

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        *,
        names: TopicNames | None = None,
        config: Config | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        avro: bool = False,
        dedup: Deduplicator | None = None,
        attempts: int = 8,
    ) -> None:
        self.names = names or TopicNames()
        self.max_bytes = max_bytes
        self.stats = SubscriberStats()
        self._avro = avro
        self._dedup = dedup if dedup is not None else Deduplicator()
        self._handlers: dict[type[Event], list[Handler[Any]]] = {}
        self._bases = {self.names.name(cls.TOPIC): cls.TOPIC for cls in KINDS.values()}
        self._topics: frozenset[str] = frozenset()
        settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            # Offsets are stored only after a record is dealt with; the
            # background commit then never passes an unprocessed record.
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
        }
        settings.update(config or {})
        self._consumer = Consumer(settings)
        self._bootstrap = bootstrap
        self._attempts = attempts
        self._dead: _Writer | None = None
        self._closed = False

    def on(self, kind: type[E], handler: Handler[E]) -> None:
        """Call ``handler(event, meta)`` for every new event of ``kind``."""
        if kind not in KINDS.values():
            raise EventError(f"unknown event kind {kind.__name__}", "kind")
        self._handlers.setdefault(kind, []).append(handler)

    @property
    def topics(self) -> frozenset[str]:
        """The topics read: those of the kinds with handlers."""
        return frozenset(self.names.name(kind.TOPIC) for kind in self._handlers)

    def _subscribe(self) -> None:
        wanted = self.topics
        if not wanted:
            raise NccoordError("subscriber has no handlers")
        if wanted != self._topics:
            self._consumer.subscribe(sorted(wanted))
            self._topics = wanted
            logger.info("subscribed to %s", sorted(wanted))

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> int:
        """Read up to ``max_records`` records and deal with each; return the count."""
        if self._closed:
            raise NccoordError("subscriber is closed")
        self._subscribe()
        try:
            batch = self._consumer.consume(max_records, timeout)
        except KafkaException as exc:
            raise TransportError(f"cannot read: {exc}") from exc
        for index, msg in enumerate(batch):
            try:
                self._process(msg)
            except BaseException:
                self._rewind(batch[index:])
                raise
        return len(batch)

    def run(
        self, *, stop: threading.Event | None = None, duration: float | None = None
    ) -> None:
        """Poll until ``stop`` is set or ``duration`` seconds have passed."""
        deadline = None if duration is None else time.monotonic() + duration
        while not (stop is not None and stop.is_set()):
            if deadline is not None and time.monotonic() >= deadline:
                return
            self.poll(0.2)

    def _rewind(self, rest: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for msg in rest:
            if msg.error() is None:
                topic, partition, offset = _origin(msg)
                first.setdefault((topic, partition), offset)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # pragma: no cover - partition revoked
                logger.warning("cannot rewind %s[%d]: %s", topic, partition, exc)

    def _process(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            self._on_consumer_error(err)
            return
        topic, partition, offset = _origin(msg)
        try:
            event, meta = self._decode(topic, msg)
        except EventError as exc:
            self._dead_letter(msg, exc)
            self.stats.dead_lettered += 1
            self._consumer.store_offsets(message=msg)
            return
        seq = meta.sequence
        if seq is not None and self._dedup.is_repeat(
            meta.source, topic, partition, seq
        ):
            logger.debug("dropped repeat %s seq %d from %s", meta.id, seq, meta.source)
            self.stats.duplicates += 1
        elif (handlers := self._handlers.get(kind_of(event))) is None:
            self.stats.ignored += 1
        else:
            for handler in handlers:
                handler(event, meta)
            self.stats.delivered += 1
        if seq is not None:
            self._dedup.mark(meta.source, topic, partition, seq)
        logger.debug("done with %s[%d]@%d", topic, partition, offset)
        self._consumer.store_offsets(message=msg)

    def _decode(self, topic: str, msg: Message) -> tuple[Event, hdr.EventMeta]:
        event, meta = hdr.decode_record(
            _headers(msg), msg.value(), max_bytes=self.max_bytes
        )
        base = self._bases.get(topic)
        if base is not None and base != event.TOPIC:
            raise EventError(f"{meta.type} does not belong on {topic}", hdr.TYPE)
        if self._avro:
            from .avro import validate_avro

            validate_avro(event)
        return event, meta

    def _on_consumer_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise TransportError(f"consumer failed: {err.str()}")
        logger.debug("consumer reports: %s", err.str())

    def _dead_letter(self, msg: Message, exc: EventError) -> None:
        """Write the record, unchanged, to the dead-letter topic and wait for it."""
        topic = self.names.deadletter
        if self._dead is None:
            config = _producer_config(self._bootstrap, "nccoord-deadletter", 0)
            self._dead = _Writer(config, self._attempts)
        origin_topic, partition, offset = _origin(msg)
        headers = _headers(msg)
        headers += [
            (hdr.DLQ_REASON, str(exc).encode()),
            (hdr.DLQ_TOPIC, origin_topic.encode()),
            (hdr.DLQ_PARTITION, str(partition).encode()),
            (hdr.DLQ_OFFSET, str(offset).encode()),
        ]
        if exc.field is not None:
            headers.append((hdr.DLQ_FIELD, exc.field.encode()))
        key = msg.key()
        value = msg.value() or b""
        key_bytes = key.encode() if isinstance(key, str) else key
        try:
            self._send_dead_letter(topic, value, key_bytes, headers)
        except TransportError as failure:
            if "too large" not in str(failure).lower():
                raise
            # The record fit its own topic but not with the dead-letter
            # headers added: keep its head and its full size; the whole of it
            # stays readable at its origin until retention removes it.
            headers.append((hdr.DLQ_TRUNCATED, str(len(value)).encode()))
            self._send_dead_letter(topic, value[:DEAD_LETTER_HEAD], key_bytes, headers)
        logger.warning(
            "dead-lettered %s[%d]@%d: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            exc,
        )

    def _send_dead_letter(
        self, topic: str, value: bytes, key: bytes | None, headers: hdr.HeaderList
    ) -> None:
        assert self._dead is not None
        delivery = _Delivery()
        self._dead.send(topic, value, key, headers, delivery)
        self._dead.wait(delivery, topic, 30.0)

    def commit(self) -> None:
        """Commit the offsets of the records dealt with so far, now."""
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise TransportError(f"cannot commit: {exc}") from exc

    def close(self) -> None:
        """Commit what was dealt with, leave the group and flush dead letters."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._topics:
                self.commit()
        finally:
            self._consumer.close()
            if self._dead is not None:
                self._dead.close(30.0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _origin(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed record."""
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None  # set on consumed records
    return str(msg.topic()), partition, offset


def _headers(msg: Message) -> hdr.HeaderList:
    raw = msg.headers()
    if raw is None:
        return []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)
