"""Lease election end to end over a real Kafka broker."""

from __future__ import annotations

import contextlib
import queue
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from nccoord.bus import Subscriber
from nccoord.candidate import Timing
from nccoord.elector import Elector, Leadership
from nccoord.events import ControlSignal
from nccoord.kafka_log import KafkaLog
from nccoord.log import partition_for
from nccoord.roles import observe
from nccoord.topics import TopicNames

from .agents import AgentProcesses

pytestmark = pytest.mark.broker


class Recorder:
    """Collects (event, candidate, term, time) from electors' callbacks."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, str, int, float]] = queue.Queue()

    def attach(self, elector: Elector) -> Elector:
        name = elector.candidate_id
        elector.on_elected(
            lambda term: self.events.put(("elected", name, term, time.monotonic()))
        )
        elector.on_revoked(
            lambda term, _why: self.events.put(
                ("revoked", name, term, time.monotonic())
            )
        )
        return elector

    def next(self, kind: str, timeout: float) -> tuple[str, str, int, float]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event[0] == kind:
                return event
        raise AssertionError(f"no {kind} event within {timeout}s")


def make(
    bootstrap: str, topics: TopicNames, group: str, name: str, lease: float
) -> Elector:
    return Elector.over_kafka(
        bootstrap, group, name, topics=topics, timing=Timing(lease=lease)
    )


@contextlib.contextmanager
def running(
    recorder: Recorder,
    bootstrap: str,
    topics: TopicNames,
    group: str,
    names: list[str],
) -> Iterator[list[Elector]]:
    """Started electors (lease 2 s) reporting to ``recorder``; closed after."""
    electors = [
        recorder.attach(make(bootstrap, topics, group, name, 2.0)) for name in names
    ]
    for elector in electors:
        elector.start()
    try:
        yield electors
    finally:
        for elector in electors:
            elector.close()


def test_three_electors_elect_exactly_one_leader(
    kafka_bootstrap: str, topics: TopicNames, group: str
) -> None:
    recorder = Recorder()
    names = ["c0", "c1", "c2"]
    with running(recorder, kafka_bootstrap, topics, group, names) as electors:
        _, winner, term, _ = recorder.next("elected", timeout=20)
        time.sleep(3.0)  # more than a lease: renewals must keep the one leader
        leaders = [e.candidate_id for e in electors if e.is_leader()]
        assert leaders == [winner]
        assert recorder.events.empty(), "no other election or revocation happened"
        views = {e.candidate_id: e.leadership() for e in electors}
        assert {(v.leader, v.term) for v in views.values() if v} == {(winner, term)}


def test_resign_hands_over_at_once(
    kafka_bootstrap: str, topics: TopicNames, group: str
) -> None:
    lease = 6.0
    recorder = Recorder()
    electors = {
        name: recorder.attach(make(kafka_bootstrap, topics, group, name, lease))
        for name in ("a", "b")
    }
    for elector in electors.values():
        elector.start()
    try:
        _, first, term, _ = recorder.next("elected", timeout=20)
        resigned_at = time.monotonic()
        electors[first].resign()
        assert not electors[first].is_leader()
        _, second, next_term, at = recorder.next("elected", timeout=lease)
        assert second != first
        assert next_term == term + 1
        # A handover takes about one log round trip, far less than the lease
        # a crash would make the next candidate wait.
        assert at - resigned_at < lease / 3, f"handover took {at - resigned_at:.2f}s"
    finally:
        for elector in electors.values():
            elector.close()


def test_restarted_candidate_never_reuses_an_old_term(
    kafka_bootstrap: str, topics: TopicNames, group: str
) -> None:
    recorder = Recorder()
    first = recorder.attach(make(kafka_bootstrap, topics, group, "same", 2.0))
    first.start()
    _, _, old_term, _ = recorder.next("elected", timeout=20)
    first.close()  # a crash as far as the log knows: no release
    restarted = recorder.attach(make(kafka_bootstrap, topics, group, "same", 2.0))
    assert restarted.incarnation != first.incarnation
    started = time.monotonic()
    restarted.start()
    try:
        _, name, new_term, at = recorder.next("elected", timeout=20)
        assert name == "same"
        assert new_term > old_term
        # The new incarnation is a stranger to the old term: it waited out the
        # lease recorded in the log before claiming.
        assert at - started >= Timing(lease=2.0).patience(2.0)
    finally:
        restarted.close()


def test_killing_the_leader_process_elects_another_within_lease_and_bound(
    agents: AgentProcesses,
) -> None:
    for name in ("p1", "p2", "p3"):
        agents.start(name)
    leader, elected = agents.wait_for("elected", timeout=30)
    agents.signal(leader, signal.SIGKILL)
    killed_at = time.monotonic()
    successor, event = agents.wait_for("elected", timeout=15)
    took = event["mono"] - killed_at
    timing = Timing(lease=2.0)
    # The successor waits the lease (plus drift and margin) after the last
    # renewal it read, which came at most one renew interval before the kill.
    bound = timing.patience(2.0) + timing.renew_interval + 1.0
    assert successor != leader
    assert event["term"] > elected["term"]
    assert took <= bound, f"failover took {took:.2f}s, bound {bound:.2f}s"


def test_role_changes_reach_system_control_and_observers_agree(
    kafka_bootstrap: str, topics: TopicNames, group: str, agents: AgentProcesses
) -> None:
    seen: list[ControlSignal] = []
    subscriber = Subscriber(kafka_bootstrap, f"watch-{group}", names=topics)
    subscriber.on(ControlSignal, lambda event, _meta: seen.append(event))
    agents.start("r1")
    agents.start("r2")
    first, elected = agents.wait_for("elected", timeout=30)
    # Publishing is asynchronous: let the announcement out before the kill.
    _poll_until(subscriber, seen, group, {("elected", first, elected["term"])})
    agents.signal(first, signal.SIGKILL)
    second, taken = agents.wait_for("elected", timeout=15)
    wanted = {("elected", second, taken["term"]), ("revoked", first, elected["term"])}
    _poll_until(subscriber, seen, group, wanted)
    subscriber.close()
    # Published once, by the new leader: no duplicates of a change.
    assert sorted(_roles(seen, group)) == sorted(
        (e.signal, e.agent_id, e.term) for e in seen if e.group == group
    )
    log = KafkaLog(kafka_bootstrap, topics.lease)
    assert observe(log, group) == Leadership(group, taken["term"], second)


def _roles(events: list[ControlSignal], group: str) -> set[tuple[str, str, int]]:
    return {
        (e.signal, e.agent_id or "", e.term or 0) for e in events if e.group == group
    }


def _poll_until(
    subscriber: Subscriber,
    seen: list[ControlSignal],
    group: str,
    wanted: set[tuple[str, str, int]],
) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not wanted <= _roles(seen, group):
        subscriber.poll(0.5)
    assert wanted <= _roles(seen, group)


def test_undecodable_lease_record_goes_to_dead_letters_once_and_harms_nothing(
    kafka_bootstrap: str, topics: TopicNames, group: str
) -> None:
    recorder = Recorder()
    names = ["d0", "d1", "d2"]
    with running(recorder, kafka_bootstrap, topics, group, names) as electors:
        _, leader, term, _ = recorder.next("elected", timeout=20)
        log = KafkaLog(kafka_bootstrap, topics.lease)
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        partition = partition_for(group, log.partitions)
        for garbage in (b"not json", b'{"type": "claim", "term": "x"}'):
            producer.produce(topics.lease, garbage, group.encode(), partition=partition)
        producer.flush(10)
        time.sleep(2 * 2.0)  # past a lease: the leader kept renewing
        assert [e.candidate_id for e in electors if e.is_leader()] == [leader]
        assert recorder.events.empty(), "nobody was elected or revoked"
        letters = read_all(kafka_bootstrap, topics.deadletter)
    assert [value for value, _ in letters] == [
        b"not json",
        b'{"type": "claim", "term": "x"}',
    ], "one copy of each, from the holder"
    for _, headers in letters:
        assert headers["nccoord_dlq_topic"] == topics.lease.encode()
        assert headers["nccoord_dlq_partition"] == str(partition).encode()
        assert headers["nccoord_dlq_reason"]
    assert letters[1][1]["nccoord_dlq_field"] == b"term"
    assert term >= 1


def read_all(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every record of a topic, (value, headers), by partition and offset."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    found: list[tuple[int, int, bytes, dict[str, bytes]]] = []
    ended: set[int] = set()
    deadline = time.monotonic() + 20
    while len(ended) < len(partitions) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error() is not None:
            ended.add(message.partition() or 0)
            continue
        headers = {k: v or b"" for k, v in message.headers() or []}
        where = (message.partition() or 0, message.offset() or 0)
        found.append((*where, message.value() or b"", headers))
    consumer.close()
    return [(value, headers) for _, _, value, headers in sorted(found)]


def test_a_transaction_committed_on_the_lease_log_does_not_stall_the_group(
    kafka_bootstrap: str, topics: TopicNames, group: str
) -> None:
    # A commit marker takes an offset no reader sees: a hole that is not
    # retention's doing and must not make the electors read again forever.
    recorder = Recorder()
    names = ["x0", "x1"]
    with running(recorder, kafka_bootstrap, topics, group, names) as electors:
        _, leader, _, _ = recorder.next("elected", timeout=20)
        partition = partition_for(
            group, KafkaLog(kafka_bootstrap, topics.lease).partitions
        )
        stray = Producer(
            {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"stray-{group}"}
        )
        stray.init_transactions(30)
        stray.begin_transaction()
        stray.produce(topics.lease, b"stray", group.encode(), partition=partition)
        stray.commit_transaction(30)
        time.sleep(3 * 2.0)
        assert [e.candidate_id for e in electors if e.is_leader()] == [leader]
        assert recorder.events.empty(), "nobody was revoked or elected"
