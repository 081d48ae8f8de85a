"""The lease log over Apache Kafka, behind the interface of :mod:`nccoord.log`.

confluent-kafka's errors are translated here, at the edge, into the
library's own (:class:`~nccoord.errors.TransportError` and its kinds); the
original error stays as the cause.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from . import headers as hdr
from .errors import EventError, FencedError, OutcomeUnknownError, TransportError
from .log import Batch, DeliveryCallback

logger = logging.getLogger(__name__)


def producer_config(
    bootstrap: str, extra: Mapping[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Settings every nccoord producer starts from: durable, ordered, no lag.

    ``enable.idempotence`` is off by default in librdkafka, so it is set here
    explicitly, together with ``acks=all``. ``linger.ms`` is 0: control and
    lease records are few and late ones cost leadership.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 0,
        "message.timeout.ms": 10_000,
    }
    config.update(extra or {})
    config.update(overrides)
    return config


def consumer_config(
    bootstrap: str, extra: Mapping[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Settings for a reader of one assigned partition, offsets not committed."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # The Python client wants a group id even for manual assignment.
        "group.id": f"nccoord-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # Kept short on purpose: with 500 ms, about a third of handovers
        # between processes took an extra half second (measured with the
        # benchmark's handover trials); each idle reader pays ~20 empty
        # fetches a second for it.
        "fetch.wait.max.ms": 50,
    }
    config.update(extra or {})
    config.update(overrides)
    return config


def translate(error: KafkaError, what: str) -> TransportError:
    """The library error for a confluent-kafka error."""
    code = error.code()
    if code in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED):
        return FencedError(f"{what}: fenced by a newer producer: {error.str()}")
    if error.fatal() or code in (KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT):
        return OutcomeUnknownError(f"{what}: outcome unknown: {error.str()}")
    return TransportError(f"{what}: {error.str()}")


class KafkaLog:
    """One Kafka topic seen as a :class:`~nccoord.log.Log`."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int | None = None,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_config = dict(client_config or {})
        self._partitions = partitions or self._count_partitions()

    def _count_partitions(self) -> int:
        probe = Producer(producer_config(self.bootstrap, self.client_config))
        try:
            metadata = probe.list_topics(self.topic, timeout=10)
        except KafkaException as exc:
            raise TransportError(f"cannot read metadata of {self.topic}") from exc
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise TransportError(
                f"topic {self.topic} does not exist; create it with "
                "nccoord.topics.ensure_topics"
            )
        return len(topic.partitions)

    @property
    def partitions(self) -> int:
        return self._partitions

    def open_reader(self, partition: int) -> KafkaReader:
        return KafkaReader(self, partition)

    def open_writer(self) -> KafkaWriter:
        return KafkaWriter(self)


class KafkaReader:
    """Reads one partition of the topic from its first readable offset."""

    def __init__(self, log: KafkaLog, partition: int) -> None:
        self._topic = log.topic
        self._partition = partition
        self._consumer = Consumer(consumer_config(log.bootstrap, log.client_config))
        tp = TopicPartition(log.topic, partition)
        try:
            low, _ = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        except KafkaException as exc:
            self._consumer.close()
            raise TransportError(f"cannot read the bounds of {log.topic}") from exc
        self._low = max(low, 0)
        self._expected = self._low
        self._consumer.assign([TopicPartition(log.topic, partition, OFFSET_BEGINNING)])

    @property
    def low(self) -> int:
        return self._low

    def poll(self, timeout: float) -> Batch:
        # consume(n, t) waits for n records or t seconds, whichever is later
        # to come; wait for the first record alone, then take what is here.
        batch = Batch()
        first = self._consumer.poll(timeout)
        if first is None:
            return batch
        self._take(first, batch)
        for message in self._consumer.consume(499, 0):
            self._take(message, batch)
        return batch

    def _take(self, message: Message, batch: Batch) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                batch.end = message.offset()
                return
            if error.fatal():
                raise translate(error, f"reading {self._topic}[{self._partition}]")
            # Connection trouble and the like: librdkafka retries on its own.
            logger.debug("reading %s: %s", self._topic, error.str())
            return
        offset = message.offset()
        assert offset is not None, "a fetched record always has an offset"
        if offset > self._expected and self._deleted_before(offset):
            # Retention deleted records this reader had not read yet (it
            # lagged, or the start moved while it opened). Folding on would
            # skip them; read again from the new start.
            raise TransportError(
                f"{self._topic}[{self._partition}] skipped from {self._expected} "
                f"to {offset}: records were deleted before they were read"
            )
        self._expected = offset + 1
        batch.records.append((offset, message.key() or b"", message.value() or b""))
        batch.end = None

    def _deleted_before(self, offset: int) -> bool:
        """Whether a jump in offsets is retention's doing.

        Other jumps are harmless: a transaction's commit marker, or records
        of an aborted transaction, take offsets that a read_committed reader
        never sees (nccoord writes no transactions here, but others might).
        """
        tp = TopicPartition(self._topic, self._partition)
        try:
            low, _ = self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        except KafkaException as exc:
            raise TransportError(f"cannot read the bounds of {self._topic}") from exc
        return bool(low > self._expected)

    def close(self) -> None:
        self._consumer.close()


class KafkaWriter:
    """An idempotent producer; outcomes come back through the callbacks."""

    def __init__(self, log: KafkaLog) -> None:
        self._topic = log.topic
        self._fatal: KafkaError | None = None
        self._producer = Producer(
            producer_config(log.bootstrap, log.client_config, error_cb=self._on_error)
        )

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        logger.debug("producer error on %s: %s", self._topic, error)

    def send(
        self, partition: int, key: bytes, value: bytes, on_done: DeliveryCallback
    ) -> None:
        if self._fatal is not None:
            on_done(translate(self._fatal, f"writing {self._topic}"))
            return

        def delivered(error: KafkaError | None, _message: Message) -> None:
            on_done(
                None if error is None else translate(error, f"writing {self._topic}")
            )

        try:
            self._producer.produce(
                self._topic, value, key, partition=partition, on_delivery=delivered
            )
        except (KafkaException, BufferError) as exc:
            on_done(OutcomeUnknownError(f"writing {self._topic}: {exc}"))
        self._producer.poll(0)

    def poll(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def close(self) -> None:
        self._producer.flush(5)


class KafkaDeadLetters:
    """Copies undecodable lease records to the dead-letter topic, unchanged.

    The reason and the origin (topic, partition, offset) travel in the same
    headers the event bus uses for its dead letters.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        origin_topic: str,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._topic = topic
        self._origin = origin_topic
        self._config = producer_config(bootstrap, client_config)
        self._producer: Producer | None = None  # made on the first dead letter

    def put(
        self, partition: int, offset: int, key: bytes, value: bytes, error: EventError
    ) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            (hdr.DLQ_REASON, str(error).encode()),
            (hdr.DLQ_TOPIC, self._origin.encode()),
            (hdr.DLQ_PARTITION, str(partition).encode()),
            (hdr.DLQ_OFFSET, str(offset).encode()),
        ]
        if error.field is not None:
            headers.append((hdr.DLQ_FIELD, error.field.encode()))
        if self._producer is None:
            self._producer = Producer(self._config)
        try:
            self._producer.produce(self._topic, value, key, headers=headers)
        except (KafkaException, BufferError) as exc:
            raise TransportError(f"writing {self._topic}: {exc}") from exc
        self._producer.poll(0)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
