"""One process following many election groups on one lease topic.

1. Fold throughput: a synthetic lease log in which every group has one Claim
   and then renews in turn (as groups renewing at the same interval
   interleave in a real log), read through :func:`nccoord.lease.decode` and
   one :class:`~nccoord.lease.GroupView` per group; records per second, with
   and without decoding.
2. Follower lag on the broker: a producer process writes each group's Claim
   and then its Renews at the lease's renew interval (a quarter of the
   lease) for a fixed time; a follower reads every partition of the topic,
   decodes and folds. Lag is the time from the producer's ``produce()`` call
   to the end of the fold of that record, on the machine's monotonic clock
   (both processes run here). The follower's reads use ``poll`` and then take
   what is already fetched, so the figure is the fold's and the transport's,
   not a read timeout's.
"""

from __future__ import annotations

import multiprocessing
import struct
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from nccoord import lease
from nccoord.kafka_log import consumer_config, producer_config
from nccoord.lease import INITIAL, Claim, GroupView, LeaseState, Renew
from nccoord.log import partition_for
from nccoord.topics import LEASE, TopicSettings, topic_configs

PARTITIONS = 3
WARM_UP = 1.0
HOLDER = "leader-a"
INCARNATION = "0f" * 16


def _claim(group: str) -> Claim:
    return Claim(
        group=group,
        candidate=HOLDER,
        incarnation=INCARNATION,
        term=1,
        prev_seq=0,
        lease=2.0,
        snapshot=INITIAL,
        folded_through=-1,
    )


def _renew(group: str, seq: int, offset: int) -> Renew:
    # The state its writer had folded: the previous Renew counted.
    seen = LeaseState(
        term=1,
        holder=HOLDER,
        incarnation=INCARNATION,
        seq=seq - 1,
        lease=2.0,
        last_offset=max(offset - 1, 0),
    )
    return Renew(
        group=group,
        holder=HOLDER,
        incarnation=INCARNATION,
        term=1,
        seq=seq,
        snapshot=seen,
        folded_through=max(offset - 1, 0),
    )


def synthetic_log(groups: int, records: int) -> list[bytes]:
    """Claims for every group, then Renews round-robin, encoded."""
    log = []
    for offset in range(records):
        group, seq = f"group-{offset % groups}", offset // groups
        record = _claim(group) if seq == 0 else _renew(group, seq, offset)
        log.append(lease.encode(record))
    return log


def fold_throughput(groups: int, records: int) -> dict[str, Any]:
    """Records per second through decode+fold and through the fold alone."""
    records = max(records, 4 * groups)
    log = synthetic_log(groups, records)
    views: dict[str, GroupView] = {}
    started = time.perf_counter()
    decoded = []
    for offset, data in enumerate(log):
        record = lease.decode(data)
        decoded.append(record)
        view = views.get(record.group)
        if view is None:
            view = views[record.group] = GroupView(record.group)
        view.apply(offset, record)
    with_decode = time.perf_counter() - started
    views = {}
    started = time.perf_counter()
    for offset, record in enumerate(decoded):
        view = views.get(record.group)
        if view is None:
            view = views[record.group] = GroupView(record.group)
        view.apply(offset, record)
    fold_only = time.perf_counter() - started
    last_seq = (records - 1) // groups
    correct = all(
        v.state is not None and v.state.seq >= last_seq - 1 for v in views.values()
    )
    return {
        "groups": groups,
        "records": records,
        "decode_fold_records_per_s": records / with_decode,
        "fold_records_per_s": records / fold_only,
        "states_correct": correct,
    }


# -- follower lag on a broker --------------------------------------------------


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = topic_configs(LEASE, 1, TopicSettings())
    futures = admin.create_topics([NewTopic(topic, PARTITIONS, 1, config=config)])
    for future in futures.values():
        future.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = admin.list_topics(topic, timeout=10).topics.get(topic)
        if (
            found
            and found.partitions
            and all(p.leader >= 0 for p in found.partitions.values())
        ):
            return
        time.sleep(0.1)


def produce_renewals(
    bootstrap: str,
    topic: str,
    groups: int,
    renew_every: float,
    duration: float,
    sent: Any,
    late: Any,
) -> None:
    """Claims, then every group's Renew each ``renew_every`` s; bounded."""
    producer = Producer(producer_config(bootstrap))
    names = [f"group-{g}" for g in range(groups)]
    parts = [partition_for(name, PARTITIONS) for name in names]
    count = 0

    def send(index: int, record: Claim | Renew, stamped: bool) -> None:
        headers = [("sent", struct.pack("!d", time.monotonic()))] if stamped else []
        while True:
            try:
                producer.produce(
                    topic,
                    lease.encode(record),
                    names[index].encode(),
                    partition=parts[index],
                    headers=headers,
                )
                break
            except BufferError:
                producer.poll(0.01)

    # The Claims are not timed: the follower's first fetches of a new topic
    # may wait out a back-off, which is no part of following it.
    for index, name in enumerate(names):
        send(index, _claim(name), stamped=False)
        count += 1
    producer.flush(30)
    time.sleep(WARM_UP)
    started = time.monotonic()
    seq = 0
    # Each round of renewals is spread evenly over its interval.
    while time.monotonic() - started < duration:
        seq += 1
        round_start = started + (seq - 1) * renew_every
        for index, name in enumerate(names):
            due = round_start + renew_every * index / groups
            producer.poll(0)
            wait = due - time.monotonic()
            if wait > 0.001:
                time.sleep(wait)
            late.value = max(late.value, -wait)
            send(index, _renew(name, seq, seq), stamped=True)
            count += 1
    producer.flush(30)
    sent.value = count


def follower_lag(
    bootstrap: str, topic: str, groups: int, renew_every: float, duration: float
) -> dict[str, Any]:
    """Run the producer process and follow the topic; lag percentiles."""
    context = multiprocessing.get_context("spawn")
    sent = context.Value("q", -1)
    late = context.Value("d", 0.0)
    consumer = Consumer(consumer_config(bootstrap))
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
    )
    producer = context.Process(
        target=produce_renewals,
        args=(bootstrap, topic, groups, renew_every, duration, sent, late),
        daemon=True,
    )
    producer.start()
    views: dict[str, GroupView] = {}
    lags: list[float] = []
    folded = 0
    stop_at = time.monotonic() + WARM_UP + duration + 60
    try:
        while time.monotonic() < stop_at:
            if sent.value >= 0 and folded >= sent.value:
                break
            if sent.value < 0 and not producer.is_alive():
                break  # the producer failed; report what was folded
            first = consumer.poll(0.1)
            if first is None:
                continue
            for message in [first, *consumer.consume(999, 0)]:
                if message.error() is not None:
                    continue
                record = lease.decode(message.value())
                view = views.get(record.group)
                if view is None:
                    view = views[record.group] = GroupView(record.group)
                view.apply(message.offset(), record)
                folded += 1
                stamp = dict(message.headers() or []).get("sent")
                if stamp is not None:
                    lags.append(time.monotonic() - struct.unpack("!d", stamp)[0])
    finally:
        consumer.close()
        producer.join(30)
        if producer.is_alive():
            producer.kill()
    lags.sort()
    return {
        "groups": groups,
        "renew_every_s": renew_every,
        "duration_s": duration,
        "records_sent": sent.value,
        "records_folded": folded,
        "renewals_per_s": groups / renew_every,
        "producer_late_max_s": late.value,
        "lag_p50_s": _pick(lags, 0.50),
        "lag_p99_s": _pick(lags, 0.99),
        "lag_max_s": lags[-1] if lags else None,
    }


def _pick(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]
