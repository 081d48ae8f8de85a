"""Benchmark of the system events: codec rates and bus throughput, as ratios.

Two comparisons, each measured side by side in one run:

1. Encode and decode rates per kind: nccoord (msgspec Structs, validated)
   against the standard library's ``json`` with ``dataclasses`` twins of the
   same fields (camelCase names, RFC 3339 times, no other validation).
2. Publish-to-handler throughput through one real broker: nccoord's
   Publisher and Subscriber (validation, headers, dedup, offset store) against
   a bare confluent-kafka produce/consume loop writing the same bytes and
   headers to the same topic.

Run: ``python benchmarks/bench_events.py [--bootstrap HOST:PORT]``. Without a
broker address (or ``NCCOORD_BOOTSTRAP``) it starts one on 127.0.0.1 and stops
it at the end. It prints the ratios and writes them as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from nccoord import events
from nccoord import headers as hdr
from nccoord.bus import Publisher, Subscriber
from nccoord.events import (
    Broadcast,
    ControlSignal,
    Event,
    Heartbeat,
    Override,
    OverrideRevoke,
    OverrideSpec,
    StatusUpdate,
)
from nccoord.topics import TopicNames, ensure_topics

logger = logging.getLogger("bench_events")

T0 = datetime(2025, 7, 26, 0, 10, tzinfo=UTC)
SAMPLES: dict[str, Event] = {
    "heartbeat": Heartbeat(agent_id="node-caster-03", timestamp=T0, status="healthy"),
    "control": ControlSignal(
        signal="elected",
        group="strategy",
        agent_id="node-caster-03",
        term=12,
        timestamp=T0,
    ),
    "override": Override(
        target="strategy-alpha",
        timestamp=T0,
        override=OverrideSpec(
            type="threshold-adjustment", new_value=0.85, duration_seconds=120
        ),
    ),
    "override-revoke": OverrideRevoke(
        target="strategy-alpha", timestamp=T0, override_id="ov-17", reason="drift"
    ),
    "status": StatusUpdate(
        agent_id="node-caster-03",
        timestamp=T0,
        kind="plugin",
        plugin="scorer",
        success=False,
        error="timeout after 3s",
    ),
    "broadcast": Broadcast(
        kind="consensus-result",
        timestamp=T0,
        group="strategy",
        round=41,
        term=12,
        value="plan-b",
        voters=["node-caster-01", "node-caster-02", "node-caster-03"],
    ),
}


# -- the baseline: dataclasses and json -----------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Twin:
    """A dataclass with the Struct's fields, and json in and out of it."""

    def __init__(self, struct: type[msgspec.Struct]) -> None:
        fields = msgspec.structs.fields(struct)
        self.nested: dict[str, Twin] = {}
        self.times: set[str] = set()
        specs: list[tuple[str, Any, Any]] = []
        for field in fields:
            info = msgspec.inspect.type_info(field.type)
            if isinstance(info, msgspec.inspect.StructType):
                self.nested[field.name] = Twin(info.cls)
            if isinstance(info, msgspec.inspect.DateTimeType):
                self.times.add(field.name)
            default = None if field.required is False else dataclasses.MISSING
            specs.append((field.name, Any, dataclasses.field(default=default)))
        self.cls = dataclasses.make_dataclass(
            struct.__name__ + "Twin", specs, kw_only=True
        )
        self.to_wire = {f.name: _camel(f.name) for f in fields}
        self.from_wire = {wire: name for name, wire in self.to_wire.items()}

    def of(self, event: msgspec.Struct) -> Any:
        values = {}
        for name in self.to_wire:
            value = getattr(event, name)
            values[name] = self.nested[name].of(value) if name in self.nested else value
        return self.cls(**values)

    def to_dict(self, obj: Any) -> dict[str, Any]:
        out = {}
        for name, wire in self.to_wire.items():
            value = getattr(obj, name)
            if value is None:
                continue
            if name in self.nested:
                value = self.nested[name].to_dict(value)
            elif name in self.times:
                value = value.isoformat().replace("+00:00", "Z")
            out[wire] = value
        return out

    def encode(self, obj: Any) -> bytes:
        return json.dumps(self.to_dict(obj), separators=(",", ":")).encode()

    def from_dict(self, data: dict[str, Any]) -> Any:
        values = {}
        for wire, value in data.items():
            name = self.from_wire.get(wire)
            if name is None:
                continue
            if name in self.nested:
                value = self.nested[name].from_dict(value)
            elif name in self.times:
                value = datetime.fromisoformat(value)
            values[name] = value
        return self.cls(**values)

    def decode(self, data: bytes) -> Any:
        return self.from_dict(json.loads(data))


def _rate(
    action: Callable[[], object], seconds: float = 0.15, repeats: int = 3
) -> float:
    """Best operations per second of ``repeats`` runs of about ``seconds`` each."""
    count = 1
    while True:
        start = time.perf_counter()
        for _ in range(count):
            action()
        if time.perf_counter() - start >= seconds / 4:
            break
        count *= 2
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        loops = 0
        while time.perf_counter() - start < seconds:
            for _ in range(count):
                action()
            loops += count
        best = max(best, loops / (time.perf_counter() - start))
    return best


def bench_codec() -> dict[str, dict[str, float]]:
    results = {}
    for kind, event in SAMPLES.items():
        twin = Twin(type(event))
        obj = twin.of(event)
        body = events.encode(event)
        assert json.loads(twin.encode(obj)) == json.loads(body), kind
        assert twin.decode(body) == obj, kind
        cls = type(event)
        row = {
            "nccoord_encode_per_s": _rate(lambda e=event: events.encode(e)),
            "json_encode_per_s": _rate(lambda o=obj, t=twin: t.encode(o)),
            "nccoord_decode_per_s": _rate(lambda c=cls, b=body: events.decode(c, b)),
            "json_decode_per_s": _rate(lambda b=body, t=twin: t.decode(b)),
        }
        row["encode_ratio"] = row["nccoord_encode_per_s"] / row["json_encode_per_s"]
        row["decode_ratio"] = row["nccoord_decode_per_s"] / row["json_decode_per_s"]
        results[kind] = row
        print(
            f"  {kind:16} encode x{row['encode_ratio']:5.1f}"
            f"  ({row['nccoord_encode_per_s']:>10,.0f}/s vs"
            f" {row['json_encode_per_s']:>9,.0f}/s)"
            f"   decode x{row['decode_ratio']:5.1f}"
            f"  ({row['nccoord_decode_per_s']:>10,.0f}/s vs"
            f" {row['json_decode_per_s']:>9,.0f}/s)"
        )
    return results


# -- throughput through the broker ------------------------------------------------


def _start_at_end(bootstrap: str, group: str, topic: str) -> None:
    """Commit the group's offsets at the partitions' current ends."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = [TopicPartition(topic, p, _end(consumer, topic, p)) for p in partitions]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def _end(consumer: Consumer, topic: str, partition: int, limit: float = 30) -> int:
    # A topic just created may not have a partition leader for a moment.
    deadline = time.monotonic() + limit
    while True:
        try:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10, cached=False
            )
            return int(high)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _heartbeats(count: int) -> list[Heartbeat]:
    return [
        Heartbeat(agent_id=f"agent-{n % 8}", timestamp=T0, status="healthy")
        for n in range(count)
    ]


def run_nccoord(bootstrap: str, names: TopicNames, count: int) -> float:
    """Events per second from the first publish to the last handler call."""
    group = f"bench-{uuid.uuid4().hex}"
    _start_at_end(bootstrap, group, names.heartbeat)
    got = [0]

    def handle(event: Heartbeat, meta: hdr.EventMeta) -> None:
        got[0] += 1

    batch = _heartbeats(count)
    with (
        Publisher(bootstrap, name="bench", names=names) as publisher,
        Subscriber(bootstrap, group, names=names) as subscriber,
    ):
        subscriber.on(Heartbeat, handle)
        publisher.publish(batch[0], wait=True)  # warm up: join the group
        _until(lambda: got[0] >= 1, subscriber.poll)
        start = time.perf_counter()
        for event in batch:
            publisher.publish(event)
        publisher.flush()
        _until(lambda: got[0] >= count + 1, subscriber.poll)
        elapsed = time.perf_counter() - start
    return count / elapsed


def run_bare(bootstrap: str, names: TopicNames, count: int) -> float:
    """The same bytes and headers through a bare producer and consumer."""
    topic = names.heartbeat
    group = f"bench-{uuid.uuid4().hex}"
    _start_at_end(bootstrap, group, topic)
    records = []
    for n, event in enumerate(_heartbeats(count)):
        meta = hdr.new_meta(
            event, id=str(uuid.uuid4()), source="/bare/1", sequence=n + 1
        )
        records.append(
            (events.encode(event), event.key().encode(), hdr.to_headers(meta))
        )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": True,
        }
    )
    got = [0]

    def consume(timeout: float) -> int:
        batch = consumer.consume(500, timeout)
        got[0] += sum(1 for m in batch if m.error() is None)
        return len(batch)

    try:
        consumer.subscribe([topic])
        value, key, headers = records[0]
        producer.produce(topic, value=value, key=key, headers=headers)
        producer.flush(30)
        _until(lambda: got[0] >= 1, consume)
        start = time.perf_counter()
        for value, key, headers in records:
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        producer.flush(60)
        _until(lambda: got[0] >= count + 1, consume)
        elapsed = time.perf_counter() - start
    finally:
        consumer.close()
        producer.close()
    return count / elapsed


def _until(
    done: Callable[[], bool], poll: Callable[[float], int], limit: float = 60
) -> None:
    deadline = time.monotonic() + limit
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done within {limit}s")
        poll(0.2)


def bench_bus(bootstrap: str, count: int, rounds: int) -> dict[str, Any]:
    names = TopicNames(f"bench-{uuid.uuid4().hex[:8]}-")
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), names)
    ours, bare = [], []
    for n in range(rounds):
        ours.append(run_nccoord(bootstrap, names, count))
        bare.append(run_bare(bootstrap, names, count))
        print(
            f"  round {n + 1}: nccoord {ours[-1]:>9,.0f} events/s,"
            f" bare confluent-kafka {bare[-1]:>9,.0f} records/s"
        )
    result = {
        "events_per_round": count,
        "rounds": rounds,
        "topic": names.heartbeat,
        "nccoord_per_s": ours,
        "bare_per_s": bare,
        "nccoord_median_per_s": statistics.median(ours),
        "bare_median_per_s": statistics.median(bare),
    }
    result["ratio"] = result["nccoord_median_per_s"] / result["bare_median_per_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("NCCOORD_BOOTSTRAP"))
    parser.add_argument("--count", type=int, default=20_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).with_name("results") / "bench_events.json",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    began = time.monotonic()
    print("codec: nccoord rate / (json + dataclasses) rate, per kind")
    codec = bench_codec()
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from nccoord.broker import start_broker

        broker = start_broker()
        bootstrap = broker.bootstrap
    try:
        print(f"bus: publish-to-handler throughput on {bootstrap}, {args.count} events")
        bus = bench_bus(bootstrap, args.count, args.rounds)
    finally:
        if broker is not None:
            broker.stop()
    print(
        f"bus: nccoord / bare confluent-kafka = x{bus['ratio']:.2f}"
        f" (medians {bus['nccoord_median_per_s']:,.0f} vs"
        f" {bus['bare_median_per_s']:,.0f} per second)"
    )
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "codec": codec,
        "bus": bus,
        "seconds": round(time.monotonic() - began, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} in {report['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
