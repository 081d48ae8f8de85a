"""The physical floor: one record produced, then consumed, on the same broker.

The producer and the consumer carry the settings nccoord's lease log uses
(:func:`~nccoord.kafka_log.producer_config`: ``acks=all``, idempotent,
``linger.ms=0``; :func:`~nccoord.kafka_log.consumer_config`: one assigned
partition, ``fetch.wait.max.ms=50``), so the round trip is the least any
exchange over the log can take: one write, one read. A handover over the lease
log needs at least two of them (the Release read, then the Claim read back).
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition

from nccoord.kafka_log import consumer_config, producer_config

WARM_UP = 5


def round_trips(
    bootstrap: str, topic: str, count: int, time_limit: float = 60.0
) -> list[float]:
    """Up to ``count`` round trips in seconds, stopping at ``time_limit``."""
    producer = Producer(producer_config(bootstrap))
    consumer = Consumer(consumer_config(bootstrap))
    try:
        partition = TopicPartition(topic, 0)
        _, high = consumer.get_watermark_offsets(partition, timeout=10, cached=False)
        consumer.assign([TopicPartition(topic, 0, high)])
        samples: list[float] = []
        stop_at = time.monotonic() + time_limit
        for i in range(count + WARM_UP):
            if time.monotonic() > stop_at:
                break
            took = _one(producer, consumer, topic, f"{i}".encode(), stop_at)
            if took is not None and i >= WARM_UP:
                samples.append(took)
        return samples
    finally:
        producer.flush(5)
        consumer.close()


def _one(
    producer: Producer, consumer: Consumer, topic: str, payload: bytes, stop: float
) -> float | None:
    sent = time.monotonic()
    producer.produce(topic, payload, b"floor", partition=0)
    producer.poll(0)
    # poll(), not consume(n, t): consume waits out t unless n records arrive.
    while time.monotonic() < stop:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        if message.value() == payload:
            took = time.monotonic() - sent
            producer.poll(0)
            return took
    return None
