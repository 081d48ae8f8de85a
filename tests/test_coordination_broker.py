"""The coordination services against a real broker (DESIGN.md sections 4, 5).

The agents are the example program, ``examples/coord_agent.py``, each its
own OS process, reporting JSON lines on stdout.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nccoord.bus import Publisher, Subscriber
from nccoord.control import request_failover
from nccoord.coordinator import MEMBERSHIP_DETAIL
from nccoord.events import StatusUpdate
from nccoord.kafka_log import KafkaLog
from nccoord.overrides import FailureRate, Supervisor
from nccoord.signing import Signer, public_key_text
from nccoord.topics import TopicNames

pytestmark = pytest.mark.broker

AGENT = Path(__file__).resolve().parent.parent / "examples" / "coord_agent.py"
Report = dict[str, Any]


class Agents:
    """Example agents as processes; every report they print, in arrival order."""

    def __init__(self, bootstrap: str, topics: TopicNames, group: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.group = group
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.reports: list[tuple[str, Report]] = []
        self._changed = threading.Condition()

    def start(self, name: str, *extra: str) -> None:
        process = subprocess.Popen(
            [
                sys.executable,
                str(AGENT),
                "--bootstrap",
                self.bootstrap,
                "--group",
                self.group,
                "--prefix",
                self.topics.prefix,
                "--name",
                name,
                "--json",
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes[name] = process
        threading.Thread(target=self._follow, args=(name, process), daemon=True).start()

    def _follow(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self.reports.append((name, json.loads(line)))
                self._changed.notify_all()

    def of(self, event: str, agent: str | None = None) -> list[tuple[str, Report]]:
        with self._changed:
            return [
                (name, report)
                for name, report in self.reports
                if report["event"] == event and agent in (None, name)
            ]

    def until(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"not seen in {timeout}s: {what}; last: {self.reports[-8:]}"
                    )
                self._changed.wait(min(left, 0.2))

    def kill(self, name: str) -> None:
        self.processes[name].kill()
        self.processes[name].wait()

    def stop(self, timeout: float = 20) -> None:
        """Close every agent's input (it resigns and exits); wait for it."""
        for process in self.processes.values():
            if process.poll() is None and process.stdin is not None:
                process.stdin.close()
        for process in self.processes.values():
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()


@pytest.fixture
def example_agents(
    kafka_bootstrap: str, topics: TopicNames, group: str
) -> Iterator[Agents]:
    agents = Agents(kafka_bootstrap, topics, group)
    yield agents
    agents.close()


def decided_by(agents: Agents, name: str) -> dict[int, tuple[Any, int, list[str]]]:
    return {
        r["round"]: (r["value"], r["term"], r["voters"])
        for _, r in agents.of("decided", name)
    }


def announced(bootstrap: str, topics: TopicNames, agent: str) -> list[str]:
    """The membership states announced on system-status for ``agent``."""
    states: list[str] = []

    def take(update: StatusUpdate, meta: object) -> None:
        if update.agent_id == agent and (update.detail or "").startswith(
            MEMBERSHIP_DETAIL
        ):
            states.append(update.status or "")

    with Subscriber(bootstrap, f"check-{uuid.uuid4().hex}", names=topics) as reader:
        reader.on(StatusUpdate, take)
        idle_since = time.monotonic()
        deadline = idle_since + 20
        while time.monotonic() < deadline and time.monotonic() - idle_since < 2:
            if reader.poll(0.2):
                idle_since = time.monotonic()
    return states


def test_five_agents_decide_every_round_alike_while_the_leader_is_killed(
    example_agents: Agents, kafka_bootstrap: str, topics: TopicNames
) -> None:
    agents, rounds = example_agents, 24
    names = [f"a{i}" for i in range(1, 6)]
    began = time.monotonic()
    for name in names:
        agents.start(
            name,
            "--rounds",
            str(rounds),
            "--pace",
            "0.15",
            "--lease",
            "1",
            "--heartbeat",
            "0.25",
        )
    agents.until("a leader", lambda: bool(agents.of("elected")), 45)
    leader, elected = agents.of("elected")[0]

    # Kill the leader mid-run, once rounds are being decided.
    agents.until(
        "round 6 decided",
        lambda: any(r["round"] >= 6 for _, r in agents.of("decided")),
        30,
    )
    agents.kill(leader)
    killed_at = time.monotonic()
    survivors = [name for name in names if name != leader]
    agents.until(
        "a new leader",
        lambda: any(r["term"] > elected["term"] for _, r in agents.of("elected")),
        20,
    )
    agents.until(
        f"every survivor decided all {rounds} rounds",
        lambda: all(len(decided_by(agents, n)) == rounds for n in survivors),
        40,
    )

    def dead_to(name: str) -> bool:
        seen = agents.of("member", name)
        return any(r["agent"] == leader and r["state"] == "dead" for _, r in seen)

    agents.until(
        "survivors mark the killed leader dead",
        lambda: all(dead_to(n) for n in survivors),
        15,
    )
    agents.stop()
    took = time.monotonic() - began

    proposed: dict[int, dict[str, Any]] = {}
    for name, report in agents.of("proposed"):
        proposed.setdefault(report["round"], {})[name] = report["value"]
    reference = decided_by(agents, survivors[0])
    assert sorted(reference) == list(range(1, rounds + 1))
    # Agreement: every agent, the killed one included, saw the same results.
    for name in names:
        mine = decided_by(agents, name)
        for round, outcome in mine.items():
            assert outcome == reference[round], (name, round, outcome)
    for round, (value, _term, voters) in reference.items():
        # Validity: the value was proposed for that round, by a voter.
        assert voters and set(voters) <= set(proposed[round]), (round, voters)
        assert value in {proposed[round][v] for v in voters}, (round, value)
    terms = [term for _, term, _ in reference.values()]
    assert terms == sorted(terms)
    assert elected["term"] in terms, "the first leader decided nothing"
    assert terms[-1] > elected["term"], "no round decided after the kill"
    # The killed leader's death was announced once, by the new leader.
    assert announced(kafka_bootstrap, topics, leader).count("dead") == 1
    print(
        f"{rounds} rounds by terms {sorted(set(terms))}; leader {leader} killed "
        f"{killed_at - began:.1f}s in; whole run {took:.1f}s"
    )


def test_a_supervisors_conditional_revoke_reaches_every_agent(
    example_agents: Agents, kafka_bootstrap: str, topics: TopicNames
) -> None:
    agents = example_agents
    signer = Signer.generate("sup-1")
    trusted = f"sup-1={public_key_text(signer.public_key)}"
    names = ["b1", "b2", "b3"]
    for name in names:
        agents.start(name, "--rounds", "0", "--trusted-key", trusted)
    agents.until("agents ready", lambda: len(agents.of("ready")) == 3, 45)

    publisher = Publisher(kafka_bootstrap, name="supervisor", names=topics)
    supervisor = Supervisor(publisher, "supervisor", signer=signer)
    # Unsigned and forged overrides first: every agent refuses them.
    Supervisor(publisher, "intruder").issue("b1", "limit", 1, 60, override_id="u")
    forger = Signer.generate("sup-1")
    Supervisor(publisher, "intruder", signer=forger).issue(
        "b1", "limit", 2, 60, override_id="f"
    )
    issued = [supervisor.issue(name, "limit", 10, 60) for name in names]
    for override in issued:
        supervisor.revoke_when(override, FailureRate(0.5, window=60, min_events=4))
    publisher.flush()

    def outcomes(reason: str) -> set[str]:
        return {n for n, r in agents.of("override") if r["outcome"] == reason}

    agents.until("overrides applied", lambda: outcomes("applied") == set(names), 30)
    refusals = {
        (n, r["id"], r["outcome"])
        for n, r in agents.of("override")
        if r["outcome"].startswith("refused")
    }
    assert ("b1", "u", "refused: unsigned") in refusals
    assert ("b1", "f", "refused: bad signature: forged or tampered") in refusals

    # A plugin starts failing; the supervisor reads the status stream.
    status = Subscriber(kafka_bootstrap, f"sup-{topics.prefix}", names=topics)
    status.on(StatusUpdate, supervisor.observe)
    for success in (True, False, False, False):
        publisher.publish(
            StatusUpdate(
                agent_id="b1",
                timestamp=supervisor.clock(),
                kind="plugin",
                plugin="scorer",
                success=success,
            )
        )
    publisher.flush()
    deadline = time.monotonic() + 30
    while supervisor.watching and time.monotonic() < deadline:
        status.poll(0.2)
    status.close()
    assert supervisor.watching == [], "the supervisor did not revoke"
    publisher.close()

    agents.until("revoked everywhere", lambda: outcomes("revoked") == set(names), 30)
    for name in names:
        _, last = agents.of("override", name)[-1]
        assert last["outcome"] == "revoked" and last["in_force"] == []


def test_a_failover_signal_hands_over_by_resign(
    example_agents: Agents, kafka_bootstrap: str, topics: TopicNames, group: str
) -> None:
    agents, lease = example_agents, 2.0
    for name in ("c1", "c2"):
        agents.start(name, "--rounds", "0", "--lease", str(lease))
    agents.until("agents ready", lambda: len(agents.of("ready")) == 2, 45)
    agents.until("a leader", lambda: bool(agents.of("elected")), 20)
    leader, elected = agents.of("elected")[0]

    with Publisher(kafka_bootstrap, name="operator", names=topics) as publisher:
        handover = request_failover(
            publisher, KafkaLog(kafka_bootstrap, topics.lease), group, timeout=20
        )
    assert handover.old_leader == leader and handover.old_term == elected["term"]
    assert handover.new_leader != leader
    assert handover.new_term == elected["term"] + 1
    # Resign releases the term: the next leader does not wait out the lease.
    assert handover.elected_after < lease, handover
    agents.until(
        "the leader resigned",
        lambda: any(r["reason"] == "resigned" for _, r in agents.of("revoked", leader)),
        10,
    )
    print(
        f"failover handover: released after {handover.released_after}s, "
        f"next leader after {handover.elected_after:.3f}s"
    )
