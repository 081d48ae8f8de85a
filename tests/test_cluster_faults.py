"""Election safety on a real three-broker cluster while brokers fail.

The broker that leads the group's ``system-lease`` partition is killed during
an election, killed during renewals, and paused. In every case the
invariants of the safety argument (docs/safety.md) are checked from the
agents' own reports and from the lease log itself, and a leader is elected
again once the cluster heals.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from nccoord.broker import Cluster
from nccoord.kafka_log import KafkaLog
from nccoord.lease import INITIAL as EMPTY
from nccoord.lease import LeaseState, decode, fold
from nccoord.log import partition_for
from nccoord.topics import TopicNames, ensure_topics

from .agents import AgentProcesses

pytestmark = [pytest.mark.broker, pytest.mark.cluster]

LEASE = 2.0
NAMES = ("c1", "c2", "c3")


@pytest.fixture
def cluster_agents(
    kafka_cluster: Cluster, topic_prefix: str, group: str
) -> Iterator[AgentProcesses]:
    names = TopicNames(topic_prefix)
    ensure_topics(AdminClient({"bootstrap.servers": kafka_cluster.bootstrap}), names)
    processes = AgentProcesses(kafka_cluster.bootstrap, names, group)
    yield processes
    processes.close()


def lease_leader(cluster: Cluster, agents: AgentProcesses) -> int:
    """Index of the node leading the group's partition of the lease topic."""
    topic = agents.topics.lease
    log = KafkaLog(cluster.bootstrap, topic)
    return cluster.leader_of(topic, partition_for(agents.group, log.partitions))


def leadership_intervals(
    agents: AgentProcesses, end: float
) -> list[tuple[str, int, float, float]]:
    """(agent, term, from, to) for every stretch an agent reported leading."""
    open_: dict[str, tuple[int, float]] = {}
    intervals = []
    for name, report in agents.seen:
        if report["event"] == "elected":
            open_[name] = (report["term"], report["mono"])
        elif report["event"] == "revoked" and name in open_:
            term, since = open_.pop(name)
            intervals.append((name, term, since, report["mono"]))
    intervals += [(name, term, since, end) for name, (term, since) in open_.items()]
    return intervals


def current_leaders(agents: AgentProcesses) -> set[str]:
    """Agents whose last report was an election (killed ones excluded)."""
    last: dict[str, str] = {}
    for name, report in agents.seen:
        if report["event"] in ("elected", "revoked"):
            last[name] = report["event"]
    return {name for name, event in last.items() if event == "elected"}


def drain(agents: AgentProcesses, seconds: float) -> None:
    """Collect every report that arrives in the next ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            agents.seen.append(agents.reports.get(timeout=0.1))
        except queue.Empty:
            continue


def fold_log(cluster: Cluster, agents: AgentProcesses) -> list[LeaseState]:
    """Every state the group's lease log passes through, from a fresh read."""
    log = KafkaLog(cluster.bootstrap, agents.topics.lease)
    reader = log.open_reader(partition_for(agents.group, log.partitions))
    states, state = [], EMPTY
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batch = reader.poll(0.5)
            for offset, key, value in batch.records:
                if key == agents.group.encode():
                    state = fold(state, offset, decode(value))
                    states.append(state)
            if batch.end is not None:
                return states
    finally:
        reader.close()
    raise AssertionError("could not read the lease log to its end")


def check_invariants(cluster: Cluster, agents: AgentProcesses) -> None:
    drain(agents, 0.5)
    # Shown with a failure: what the agents went through.
    print([(n, r["event"], r.get("term"), r.get("reason")) for n, r in agents.seen])
    intervals = leadership_intervals(agents, time.monotonic())
    elected = [(r["term"], n) for n, r in agents.seen if r["event"] == "elected"]
    # At most one leader per term.
    by_term: dict[int, set[str]] = {}
    for term, name in elected:
        by_term.setdefault(term, set()).add(name)
    assert all(len(names) == 1 for names in by_term.values()), by_term
    # Terms only grow, in the order elections were reported.
    terms = [term for term, _ in elected]
    assert terms == sorted(set(terms)), f"terms reported out of order: {terms}"
    # No two agents acting as leader at the same moment.
    for a, b in itertools.combinations(intervals, 2):
        if a[0] != b[0]:
            assert a[3] <= b[2] or b[3] <= a[2], f"overlapping leaders {a} and {b}"
    # The log agrees: terms never go back, and each reported term was won in
    # the log by the agent that reported it.
    states = fold_log(cluster, agents)
    log_terms = [s.term for s in states]
    assert log_terms == sorted(log_terms)
    winners = {s.term: s.holder for s in states if s.holder is not None}
    for term, name in elected:
        assert winners.get(term) == name, (term, name, winners)


def start_agents(agents: AgentProcesses) -> None:
    for name in NAMES:
        agents.start(name, LEASE)


def test_kill_lease_partition_leader_during_election(
    kafka_cluster: Cluster, cluster_agents: AgentProcesses
) -> None:
    victim = lease_leader(kafka_cluster, cluster_agents)
    start_agents(cluster_agents)
    cluster_agents.wait_for("ready", timeout=20)
    kafka_cluster.nodes[victim].kill()
    cluster_agents.wait_for("elected", timeout=40)
    kafka_cluster.nodes[victim].restart(brokers=len(kafka_cluster.nodes))
    drain(cluster_agents, 3 * LEASE)
    check_invariants(kafka_cluster, cluster_agents)


def test_kill_lease_partition_leader_during_renewals(
    kafka_cluster: Cluster, cluster_agents: AgentProcesses
) -> None:
    start_agents(cluster_agents)
    cluster_agents.wait_for("elected", timeout=30)
    drain(cluster_agents, LEASE)  # a few renewals counted
    victim = lease_leader(kafka_cluster, cluster_agents)
    kafka_cluster.nodes[victim].kill()
    # A leader survives the move if its renewals get through in time, else
    # it steps down and someone (maybe itself) is elected again.
    drain(cluster_agents, 6 * LEASE)
    kafka_cluster.nodes[victim].restart(brokers=len(kafka_cluster.nodes))
    assert_leader_after_healing(cluster_agents)
    check_invariants(kafka_cluster, cluster_agents)


def test_pause_lease_partition_leader(
    kafka_cluster: Cluster, cluster_agents: AgentProcesses
) -> None:
    start_agents(cluster_agents)
    cluster_agents.wait_for("elected", timeout=30)
    victim = lease_leader(kafka_cluster, cluster_agents)
    kafka_cluster.nodes[victim].pause()
    drain(cluster_agents, 5 * LEASE)
    kafka_cluster.nodes[victim].resume()
    assert_leader_after_healing(cluster_agents)
    check_invariants(kafka_cluster, cluster_agents)


def assert_leader_after_healing(agents: AgentProcesses) -> None:
    """Within a bound after healing, exactly one agent believes it leads."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        drain(agents, LEASE)
        if len(current_leaders(agents)) == 1:
            return
    raise AssertionError(f"no single leader after healing; saw {agents.seen[-10:]}")
