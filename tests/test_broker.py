"""The brokers the other tests rely on: they answer, carry records, survive."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from nccoord import broker as broker_module
from nccoord.broker import Cluster, start_broker
from nccoord.errors import BrokerError

pytestmark = pytest.mark.broker


def _create_topic(
    bootstrap: str, topic: str, replication: int = 1, **config: str
) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=1, replication_factor=replication)
    new.config = dict(config)
    admin.create_topics([new])[topic].result(timeout=30)


def _produce(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]
) -> list[Any]:
    """Write records with acks=all; return the delivered messages."""
    delivered: list[Any] = []
    errors: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        (errors if err else delivered).append(err or msg)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
            "message.timeout.ms": 30000,
        }
    )
    for key, value in records:
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
    remaining = producer.flush(45)
    assert remaining == 0, f"{remaining} records undelivered"
    assert errors == []
    return delivered


def _read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}reader",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    messages: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            messages.append(msg)
    finally:
        consumer.close()
    return messages


def _eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_broker_answers_metadata(kafka_bootstrap: str) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(
        timeout=10
    )
    assert metadata.cluster_id
    assert len(metadata.brokers) >= 1
    assert metadata.controller_id >= 0


def test_produce_then_consume_round_trip(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}roundtrip"
    _create_topic(kafka_bootstrap, topic)
    records = [(f"k{i}".encode(), f"value {i}".encode()) for i in range(3)]

    delivered = _produce(kafka_bootstrap, topic, records)
    messages = _read_all(kafka_bootstrap, topic, len(records))

    assert [m.offset() for m in delivered] == [0, 1, 2]
    assert [(m.key(), m.value()) for m in messages] == records
    assert [m.offset() for m in messages] == [0, 1, 2]


def test_topics_are_not_created_on_demand(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 3000}
    )
    failures: list[Any] = []
    producer.produce(
        f"{topic_prefix}absent", b"x", on_delivery=lambda err, msg: failures.append(err)
    )
    producer.flush(10)
    assert len(failures) == 1 and failures[0] is not None


def test_jars_broker_stops_and_removes_its_data() -> None:
    broker = start_broker(backend="jars")
    try:
        assert broker.backend == "jars"
        assert broker.bootstrap.startswith("127.0.0.1:")
        assert broker.data_dir is not None and broker.data_dir.is_dir()
        assert broker.is_running and broker.pid is not None
        pid, data_dir = broker.pid, broker.data_dir
    finally:
        broker.stop()
    assert not broker.is_running
    assert not data_dir.exists()
    assert not Path(f"/proc/{pid}").exists()


def test_broker_on_a_taken_port_says_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError) as raised:
            start_broker(backend="jars", port=port, timeout=60)
    message = str(raised.value)
    assert f"port {port} on 127.0.0.1 is taken" in message
    assert "--port" in message
    assert "\n" not in message


def test_no_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NCCOORD_BOOTSTRAP", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(broker_module, "_docker_answers", lambda: False)
    monkeypatch.setattr("shutil.which", lambda *a, **k: None)
    with pytest.raises(BrokerError, match="Java"):
        start_broker()


@pytest.mark.cluster
def test_cluster_survives_the_loss_of_a_partition_leader(
    kafka_cluster: Cluster, topic_prefix: str
) -> None:
    cluster = kafka_cluster
    pids = [node.pid for node in cluster.nodes]
    assert len(set(pids)) == 3 and all(node.is_running for node in cluster.nodes)
    metadata = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(
        timeout=10
    )
    assert sorted(metadata.brokers) == [1, 2, 3]

    topic = f"{topic_prefix}replicated"
    _create_topic(
        cluster.bootstrap, topic, replication=3, **{"min.insync.replicas": "2"}
    )
    _eventually(lambda: _isr_size(cluster, topic) == 3, 30, "three in-sync replicas")
    leader = cluster.leader_of(topic, 0)

    cluster.nodes[leader].kill()
    assert not cluster.nodes[leader].is_running
    delivered = _produce(cluster.bootstrap, topic, [(b"k", b"after the kill")])

    assert len(delivered) == 1
    assert cluster.leader_of(topic, 0) != leader
    survivors = cluster.live_bootstrap()
    assert [m.value() for m in _read_all(survivors, topic, 1)] == [b"after the kill"]

    cluster.nodes[leader].restart(brokers=3)
    assert cluster.nodes[leader].is_running
    assert cluster.nodes[leader].pid not in pids
    _eventually(lambda: _isr_size(cluster, topic) == 3, 60, "the restarted replica")


@pytest.mark.cluster
def test_cluster_node_pauses_and_resumes(kafka_cluster: Cluster) -> None:
    node = kafka_cluster.nodes[1]
    assert node.pid is not None
    node.pause()
    assert _process_state(node.pid) == "T"
    node.resume()
    assert _process_state(node.pid) in {"S", "R"}
    assert not node.is_paused


def _isr_size(cluster: Cluster, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": cluster.live_bootstrap()})
    found = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
    # Just after creation the metadata may not list the partition yet.
    partition = found.partitions.get(0) if found is not None else None
    return len(partition.isrs) if partition is not None else 0


def _process_state(pid: int) -> str:
    # Field 3 of /proc/PID/stat; the name before it is in parentheses.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]
