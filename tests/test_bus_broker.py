"""The event bus against a real Kafka broker: nothing lost, nothing doubled."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from nccoord import event_cli, events
from nccoord import headers as hdr
from nccoord.bus import Publisher, Subscriber
from nccoord.events import (
    Broadcast,
    ControlSignal,
    Event,
    Heartbeat,
    Override,
    OverrideSpec,
    StatusUpdate,
)
from nccoord.topics import TopicNames, ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

T0 = datetime(2025, 7, 26, 0, 10, tzinfo=UTC)
GOOD_HB = Heartbeat(agent_id="a-9", timestamp=T0, status="healthy")


@pytest.fixture
def names(kafka_bootstrap: str, topic_prefix: str) -> TopicNames:
    names = TopicNames(topic_prefix)
    ensure_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), names)
    return names


def _good_events() -> list[Event]:
    made: list[Event] = []
    for n in range(60):
        made.append(Heartbeat(agent_id=f"a-{n % 4}", timestamp=T0, status="healthy"))
    for n in range(10):
        spec = OverrideSpec(type="threshold", new_value=n / 10, duration_seconds=60)
        made.append(Override(target=f"s-{n % 2}", timestamp=T0, override=spec))
    for n in range(10):
        made.append(
            ControlSignal(
                signal="elected", group="g", agent_id="a-1", term=n, timestamp=T0
            )
        )
    for n in range(10):
        made.append(
            StatusUpdate(
                agent_id="a-2",
                timestamp=T0,
                kind="proposal",
                group="g",
                round=n,
                value=n,
            )
        )
    for n in range(10):
        made.append(Broadcast(kind="announcement", timestamp=T0, message=f"m{n}"))
    return made


def _record(
    event: Event, source: str, sequence: int, **changes: bytes
) -> dict[str, object]:
    """A record as the publisher would write it, with headers changed at will."""
    meta = hdr.new_meta(event, id=str(uuid.uuid4()), source=source, sequence=sequence)
    headers = dict(hdr.to_headers(meta))
    headers.update(changes)
    return {
        "value": events.encode(event),
        "key": event.key(),
        "headers": list(headers.items()),
    }


def _bad_records(names: TopicNames) -> list[tuple[str, dict[str, object], str]]:
    """(topic, record, words expected in the dead-letter reason)."""
    src = "/nccoord/bad/1"
    hb = names.heartbeat
    spec = OverrideSpec(type="x", duration_seconds=1)
    override = Override(target="s-0", timestamp=T0, override=spec)
    negative = events.encode(override).replace(b":1}", b":-1}")
    assert b'"durationSeconds":-1' in negative
    naive = events.encode(GOOD_HB).replace(b'00:10:00Z"', b'00:10:00"')
    return [
        (hb, {**_record(GOOD_HB, src, 1), "value": b"{not json"}, "not valid JSON"),
        (
            hb,
            {**_record(GOOD_HB, src, 2), "value": naive},
            "timestamp: Expected `datetime`",
        ),
        (
            hb,
            {**_record(GOOD_HB, src, 3), "value": b"x" * 5000},
            "over the limit of 4096",
        ),
        (
            hb,
            _record(GOOD_HB, src, 4, ce_type=b"nccoord.heartbeat.v2"),
            "major version v2",
        ),
        (
            hb,
            _record(GOOD_HB, src, 5, ce_type=b"nccoord.gossip.v1"),
            "unknown event kind",
        ),
        (
            hb,
            {**_record(GOOD_HB, src, 6), "headers": []},
            "ce_specversion: missing header",
        ),
        (names.control, _record(GOOD_HB, src, 7), "does not belong on"),
        (
            names.override,
            {**_record(override, src, 8), "value": negative},
            "override.durationSeconds: Expected `int` >= 0",
        ),
    ]


def _produce(bootstrap: str, records: list[tuple[str, dict[str, object]]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for topic, record in records:
        producer.produce(topic, **record)  # type: ignore[arg-type]
    assert producer.flush(30) == 0


def _drain(subscriber: Subscriber, total: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    stats = subscriber.stats
    while time.monotonic() < deadline:
        subscriber.poll(0.5)
        done = stats.delivered + stats.duplicates + stats.dead_lettered + stats.ignored
        if done >= total:
            return
    pytest.fail(f"only {stats} of {total} records dealt with in {timeout}s")


def _read_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 60.0
) -> list[object]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        found: list[object] = []
        deadline = time.monotonic() + timeout
        while len(found) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                found.append(msg)
        # Anything beyond the expected count would be a doubled dead letter.
        extra_deadline = time.monotonic() + 2
        while time.monotonic() < extra_deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                found.append(msg)
        return found
    finally:
        consumer.close()


def _value_at(bootstrap: str, topic: str, partition: int, offset: int) -> object:
    """The value of the record at one offset of a partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "peek"})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                assert msg.offset() == offset
                return msg.value()
        pytest.fail(f"no record at {topic}[{partition}]@{offset}")
    finally:
        consumer.close()


def test_good_records_reach_handlers_once_and_bad_ones_the_dead_letters(
    kafka_bootstrap: str, names: TopicNames
) -> None:
    good = _good_events()
    with Publisher(kafka_bootstrap, name="mixer", names=names) as publisher:
        metas = [publisher.publish(event, chain_id="chain-1") for event in good]

    # A producer retry that wrote twice: the same record, same source and
    # sequence, landing again on the same partition.
    repeats = [_record(GOOD_HB, "/nccoord/retry/1", n) for n in (1, 2, 3)]
    dup_records = [(names.heartbeat, r) for r in repeats + repeats[:2]]
    bad = _bad_records(names)
    _produce(
        kafka_bootstrap, dup_records + [(topic, record) for topic, record, _ in bad]
    )

    seen: list[tuple[Event, hdr.EventMeta]] = []

    def remember(event: Event, meta: hdr.EventMeta) -> None:
        seen.append((event, meta))

    group = f"g-{uuid.uuid4().hex}"
    subscriber = Subscriber(kafka_bootstrap, group, names=names, max_bytes=4096)
    for kind in (Heartbeat, Override, ControlSignal, StatusUpdate, Broadcast):
        subscriber.on(kind, remember)
    total = len(good) + len(dup_records) + len(bad)
    try:
        _drain(subscriber, total)
    finally:
        subscriber.close()

    # Every good event exactly once, with its headers.
    ids = Counter(meta.id for _, meta in seen)
    assert all(count == 1 for count in ids.values())
    published = {meta.id: event for meta, event in zip(metas, good, strict=True)}
    delivered = {meta.id: event for event, meta in seen if meta.id in published}
    assert delivered == published
    assert all(meta.chain_id == "chain-1" for _, meta in seen if meta.id in published)
    # The repeated records count once each.
    retried = [meta for _, meta in seen if meta.source == "/nccoord/retry/1"]
    assert sorted(meta.sequence or 0 for meta in retried) == [1, 2, 3]
    stats = subscriber.stats
    assert (stats.delivered, stats.duplicates, stats.dead_lettered) == (
        len(good) + 3,
        2,
        len(bad),
    )
    assert stats.delivered + stats.duplicates + stats.dead_lettered == total

    # Every bad record is on the dead-letter topic, unchanged, with its origin.
    letters = _read_all(kafka_bootstrap, names.deadletter, len(bad))
    assert len(letters) == len(bad)
    by_id = {hdr.header_text(m.headers(), hdr.ID): m for m in letters}  # type: ignore[attr-defined]
    for topic, record, words in bad:
        original = record["headers"]
        assert isinstance(original, list)
        letter = by_id[hdr.header_text(original, hdr.ID)]
        assert letter.value() == record["value"]  # type: ignore[attr-defined]
        key = record["key"]
        assert letter.key() == (key.encode() if isinstance(key, str) else key)  # type: ignore[attr-defined]
        found = dict(letter.headers())  # type: ignore[attr-defined]
        assert set(original) <= set(found.items())
        assert words in found[hdr.DLQ_REASON].decode()
        assert found[hdr.DLQ_TOPIC].decode() == topic
        partition, offset = int(found[hdr.DLQ_PARTITION]), int(found[hdr.DLQ_OFFSET])
        assert _value_at(kafka_bootstrap, topic, partition, offset) == record["value"]

    # The group committed past every record, bad ones included.
    again = Subscriber(kafka_bootstrap, group, names=names, max_bytes=4096)
    again.on(Heartbeat, remember)
    for kind in (Override, ControlSignal, StatusUpdate, Broadcast):
        again.on(kind, remember)
    before = len(seen)
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            again.poll(0.5)
    finally:
        again.close()
    assert len(seen) == before
    assert again.stats.dead_lettered == 0


def test_a_failing_handler_sees_the_event_again_on_the_next_poll(
    kafka_bootstrap: str, names: TopicNames
) -> None:
    with Publisher(kafka_bootstrap, name="once", names=names) as publisher:
        meta = publisher.publish(GOOD_HB, wait=True)
    calls: list[str] = []

    def flaky(event: Heartbeat, got: hdr.EventMeta) -> None:
        calls.append(got.id)
        if len(calls) == 1:
            raise RuntimeError("handler failed")

    subscriber = Subscriber(kafka_bootstrap, f"g-{uuid.uuid4().hex}", names=names)
    subscriber.on(Heartbeat, flaky)
    try:
        deadline = time.monotonic() + 60
        with pytest.raises(RuntimeError, match="handler failed"):
            while time.monotonic() < deadline:
                subscriber.poll(0.5)
        while len(calls) < 2 and time.monotonic() < deadline:
            subscriber.poll(0.5)
    finally:
        subscriber.close()
    assert calls == [meta.id, meta.id]
    assert subscriber.stats.delivered == 1


def test_emit_then_watch_shows_the_event(
    kafka_bootstrap: str, names: TopicNames, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="nccoord")
    event_cli.register(parser.add_subparsers(dest="command", required=True))
    common = ["--bootstrap", kafka_bootstrap, "--prefix", names.prefix]
    body = json.dumps(
        {"agentId": "cli-1", "timestamp": "2025-07-26T00:10:00Z", "status": "ok"}
    )
    args = parser.parse_args(
        ["emit", "heartbeat", "--json", body, "--chain-id", "c9", *common]
    )
    assert args.func(args) == 0
    emitted = capsys.readouterr().out
    assert emitted.startswith(f"{names.heartbeat} key=cli-1 id=")

    watch = ["watch", "--topic", "system-heartbeat", "--from-beginning", "--json"]
    args = parser.parse_args(
        [*watch, "--max-messages", "1", "--duration", "60", *common]
    )
    assert args.func(args) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["event"] == json.loads(body)
    assert line["error"] is None
    assert line["key"] == "cli-1"
    assert line["headers"]["ce_type"] == "nccoord.heartbeat.v1"
    assert line["headers"]["ce_eventchainid"] == "c9"

    args = parser.parse_args(
        [
            "watch",
            "--from-beginning",
            "--max-messages",
            "1",
            "--duration",
            "60",
            *common,
        ]
    )
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert f"{names.heartbeat}[" in text
    assert "nccoord.heartbeat.v1 key=cli-1" in text


def test_a_record_too_large_for_the_dead_letters_does_not_stop_the_stream(
    kafka_bootstrap: str, names: TopicNames
) -> None:
    # Just under the broker's limit: fits its topic, but not with the
    # dead-letter headers added (the subscriber's own limit is 512 KiB).
    big = Heartbeat(agent_id="big", timestamp=datetime.now(UTC), status="x" * 60)
    record = _record(big, "/test/big", 1)
    record["value"] = (
        events.encode(big)[:-1] + b"," + b'"pad":"' + b"y" * 1_040_000 + b'"}'
    )
    good = [
        _record(
            Heartbeat(agent_id="big", timestamp=datetime.now(UTC), status="healthy"),
            "/test/big",
            n,
        )
        for n in (2, 3, 4)
    ]
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 1_048_588}
    )
    for item in (record, *good):
        producer.produce(names.heartbeat, **item)  # type: ignore[arg-type]
    assert producer.flush(30) == 0
    seen: list[Heartbeat] = []
    subscriber = Subscriber(kafka_bootstrap, f"big-{uuid.uuid4().hex}", names=names)
    subscriber.on(Heartbeat, lambda event, _meta: seen.append(event))
    try:
        _drain(subscriber, 4)
    finally:
        subscriber.close()
    assert len(seen) == 3
    assert subscriber.stats.dead_lettered == 1
    [letter] = _read_all(kafka_bootstrap, names.deadletter, 1)
    headers = dict(letter.headers())  # type: ignore[attr-defined]
    assert int(headers[hdr.DLQ_TRUNCATED]) == len(record["value"])  # type: ignore[arg-type]
    assert letter.value() == record["value"][:65536]  # type: ignore[attr-defined,index]
