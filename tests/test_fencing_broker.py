"""Broker-enforced fencing: a paused, deposed leader cannot commit.

DESIGN section 3, "Broker-enforced fencing, as a second layer". The agents
here keep writing after their local deadline (``--broker-fence-only``), so
only the broker stands between a stale leader and the readers.
"""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from nccoord.candidate import Timing
from nccoord.fencing import TERM_HEADER
from nccoord.topics import TopicNames

from .agents import AgentProcesses

pytestmark = pytest.mark.broker


def committed_writes(bootstrap: str, topic: str) -> list[tuple[int, str, int]]:
    """(term, agent, n) of every committed record, in log order.

    Call it once the writers have stopped: it reads up to the last stable
    offset of each partition as it stands when the read begins.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(topic, timeout=10)
    assigned = [TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions]
    ends = {
        tp.partition: consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
        for tp in assigned
    }
    consumer.assign(assigned)
    writes: list[tuple[int, int, int, str, int]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        positions = {tp.partition: tp.offset for tp in consumer.position(assigned)}
        if all(positions[p] >= end or end == 0 for p, end in ends.items()):
            break
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        headers = dict(message.headers() or [])
        body = json.loads(message.value() or b"{}")
        term = int(headers[TERM_HEADER])
        where = (message.partition() or 0, message.offset() or 0)
        writes.append((*where, term, body["agentId"], int(body["message"])))
    else:
        raise AssertionError(f"did not read {topic} to its end {ends}")
    consumer.close()
    # The agents key their writes by group: one partition, one order.
    assert len({partition for partition, *_ in writes}) <= 1
    return [(term, agent, n) for _, _, term, agent, n in sorted(writes)]


def test_paused_deposed_leader_is_fenced_at_the_broker(
    agents: AgentProcesses, topics: TopicNames, kafka_bootstrap: str
) -> None:
    writer_args = ("--write-every", "0.1", "--broker-fence-only")
    for name in ("old", "new"):
        agents.start(name, 2.0, *writer_args)
    first, elected = agents.wait_for("elected", timeout=30)
    agents.wait_for("wrote", timeout=15, agent=first)
    second = "new" if first == "old" else "old"

    # Pause the leader past its lease: the other candidate takes over and,
    # having won the term in the log, takes the group's transactional id.
    agents.signal(first, signal.SIGSTOP)
    paused_at = time.monotonic()
    _, taken = agents.wait_for("elected", timeout=20, agent=second)
    assert taken["term"] > elected["term"]
    # The challenger waited out the lease after the last renewal it read,
    # which the leader sent at most one renew interval before the pause.
    timing = Timing(lease=2.0)
    waited = taken["mono"] - paused_at
    assert waited >= timing.patience(2.0) - timing.renew_interval - 0.1, waited
    agents.wait_for("wrote", timeout=15, agent=second)

    # Wake the old leader: it still believes in its producer and writes on.
    agents.signal(first, signal.SIGCONT)
    _, refused = agents.wait_for("refused", timeout=20, agent=first)
    assert "refused by the broker" in refused["reason"]
    _, revoked = agents.wait_for("revoked", timeout=10, agent=first)
    assert revoked["term"] == elected["term"]
    assert revoked["reason"] in ("expired", "fenced")
    agents.wait_for("wrote", timeout=10, agent=second)  # the new leader goes on

    # No reader ever sees a committed write of the old term after one of the
    # new term.
    agents.close()
    writes = committed_writes(kafka_bootstrap, topics.broadcast)
    terms = [term for term, _, _ in writes]
    assert elected["term"] in terms and taken["term"] in terms
    assert terms == sorted(terms), f"terms out of order: {terms}"
    old_after_resume = [
        (t, agent, n)
        for t, agent, n in writes
        if agent == first and n > refused["n"] and t == elected["term"]
    ]
    assert not old_after_resume, f"stale writes committed: {old_after_resume}"
