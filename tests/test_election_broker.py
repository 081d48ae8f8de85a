"""Lease election end to end over a real Kafka broker."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from nccoord.candidate import Timing
from nccoord.elector import Elector
from nccoord.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.broker


@pytest.fixture
def topics(kafka_bootstrap: str, topic_prefix: str) -> TopicNames:
    names = TopicNames(topic_prefix)
    ensure_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), names)
    return names


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


@pytest.fixture
def group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def test_three_electors_elect_exactly_one_leader(
    kafka_bootstrap: str, topics: TopicNames, group: str
) -> None:
    recorder = Recorder()
    electors = [
        recorder.attach(make(kafka_bootstrap, topics, group, f"c{i}", 2.0))
        for i in range(3)
    ]
    for elector in electors:
        elector.start()
    try:
        _, winner, term, _ = recorder.next("elected", timeout=20)
        time.sleep(3.0)  # more than a lease: renewals must keep the one leader
        leaders = [e.candidate_id for e in electors if e.is_leader()]
        assert leaders == [winner]
        assert recorder.events.empty(), "no other election or revocation happened"
        views = {e.candidate_id: e.leadership() for e in electors}
        assert {(v.leader, v.term) for v in views.values() if v} == {(winner, term)}
    finally:
        for elector in electors:
            elector.close()


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


def _spawn_agent(
    bootstrap: str, topics: TopicNames, group: str, name: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nccoord.demo_agent",
            "--bootstrap",
            bootstrap,
            "--group",
            group,
            "--name",
            name,
            "--lease",
            "2",
            "--prefix",
            topics.prefix,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def agent_events() -> Iterator[
    tuple[queue.Queue[tuple[str, dict[str, object]]], list[subprocess.Popen[str]]]
]:
    events: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue()
    processes: list[subprocess.Popen[str]] = []
    yield events, processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _follow(
    process: subprocess.Popen[str],
    name: str,
    events: queue.Queue[tuple[str, dict[str, object]]],
) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        events.put((name, json.loads(line)))


def test_killing_the_leader_process_elects_another_within_lease_and_bound(
    kafka_bootstrap: str,
    topics: TopicNames,
    group: str,
    agent_events: tuple[
        queue.Queue[tuple[str, dict[str, object]]], list[subprocess.Popen[str]]
    ],
) -> None:
    events, processes = agent_events
    by_name = {}
    for name in ("p1", "p2", "p3"):
        process = _spawn_agent(kafka_bootstrap, topics, group, name)
        processes.append(process)
        by_name[name] = process
        threading.Thread(
            target=_follow, args=(process, name, events), daemon=True
        ).start()

    def next_elected(timeout: float) -> tuple[str, dict[str, object]]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                name, event = events.get(timeout=left)
            except queue.Empty:
                break
            if event["event"] == "elected":
                return name, event
        raise AssertionError(f"no election within {timeout}s")

    leader, elected = next_elected(30)
    by_name[leader].send_signal(signal.SIGKILL)
    by_name[leader].wait()
    killed_at = time.monotonic()
    successor, event = next_elected(15)
    took = float(event["mono"]) - killed_at  # type: ignore[arg-type]
    timing = Timing(lease=2.0)
    # The successor waits the lease (plus drift and margin) after the last
    # renewal it read, which came at most one renew interval before the kill.
    bound = timing.patience(2.0) + timing.renew_interval + 1.0
    assert successor != leader
    assert event["term"] > elected["term"]  # type: ignore[operator]
    assert took <= bound, f"failover took {took:.2f}s, bound {bound:.2f}s"
