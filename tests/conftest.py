"""Fixtures that give tests a real Kafka.

A broker that cannot be started fails the tests that need it: a skipped
broker test would count as a pass without having checked anything.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from nccoord.broker import Broker, Cluster, start_broker, start_cluster
from nccoord.errors import BrokerError
from nccoord.topics import TopicNames, ensure_topics

from .agents import AgentProcesses


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    """One broker for the whole session (``NCCOORD_BOOTSTRAP`` if set)."""
    try:
        broker = start_broker()
    except BrokerError as exc:
        pytest.fail(f"could not start a Kafka broker: {exc}", pytrace=False)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: Broker) -> str:
    """The session broker's bootstrap address, ``127.0.0.1:PORT``."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="module")
def _kafka_cluster_module() -> Iterator[Cluster]:
    # Three JVMs are heavy on two cores: one cluster per test module.
    try:
        cluster = start_cluster(3)
    except BrokerError as exc:
        pytest.fail(f"could not start a Kafka cluster: {exc}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def kafka_cluster(_kafka_cluster_module: Cluster) -> Iterator[Cluster]:
    """The module's three-node cluster, every node up again after the test."""
    cluster = _kafka_cluster_module
    yield cluster
    for node in cluster.nodes:
        if node.is_paused:
            node.resume()
        elif not node.is_running:
            node.restart(brokers=len(cluster.nodes))


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix no other test shares, ending in ``-`` (topic-name safe)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60]
    return f"t-{name}-{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def topics(kafka_bootstrap: str, topic_prefix: str) -> TopicNames:
    """The system topics under this test's own prefix, created on the broker."""
    names = TopicNames(topic_prefix)
    ensure_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), names)
    return names


@pytest.fixture
def group() -> str:
    """An election group name no other test uses."""
    return f"g-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def agents(
    kafka_bootstrap: str, topics: TopicNames, group: str
) -> Iterator[AgentProcesses]:
    """Agent processes of ``group``; any still running are killed afterwards."""
    processes = AgentProcesses(kafka_bootstrap, topics, group)
    yield processes
    processes.close()
