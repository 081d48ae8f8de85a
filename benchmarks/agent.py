"""One election candidate in its own process, for any of the three systems.

``python -m benchmarks.agent SYSTEM --name N --group G --budget S ...`` where
SYSTEM is ``nccoord`` (an :class:`~nccoord.elector.Elector` on the lease
log), ``kazoo`` (kazoo's ``Election`` recipe on ZooKeeper) or
``kafka-group`` (the candidate that Kafka's group coordinator assigns the one
partition of a topic, with confluent-kafka). ``--budget`` is the detection
budget: nccoord's lease, ZooKeeper's session timeout, the group's
``session.timeout.ms``.

Every agent speaks the same line protocol, so the harness treats them alike.
It prints one JSON object per line, stamped with ``time.monotonic()`` (one
clock for every process of the machine):

- ``loaded``: imports done; with ``--standby`` it waits for ``join``;
- ``ready``: it is a candidate and has seen the group as it stands;
- ``elected`` / ``revoked``: it starts / stops acting as leader;
- ``resigning``: it read ``resign`` and is about to give up leadership;
- ``closed``: it left cleanly and exits.

Commands, one per line on stdin: ``join`` (leave standby), ``resign`` (give
up leadership, then leave and exit). End of input makes it leave and exit.
Only the selected system's client library is imported, so the memory an
agent uses is its own system's.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

_print_lock = threading.Lock()
READY_WAIT = 15.0


def report(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "mono": time.monotonic(), **fields})
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _wait_for(condition: Callable[[], bool], timeout: float = READY_WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


class NccoordAgent:
    def __init__(self, args: argparse.Namespace) -> None:
        from nccoord.candidate import Timing
        from nccoord.elector import Elector
        from nccoord.topics import TopicNames

        self.elector = Elector.over_kafka(
            args.bootstrap,
            args.group,
            args.name,
            topics=TopicNames(args.prefix),
            timing=Timing(lease=args.budget),
        )
        self.elector.on_elected(lambda term: report("elected", term=term))
        self.elector.on_revoked(
            lambda term, why: report("revoked", term=term, reason=why)
        )

    def join(self) -> None:
        self.elector.start()

        def knows_holder() -> bool:
            seen = self.elector.leadership()
            return seen is not None and seen.leader is not None

        _wait_for(knows_holder)

    def resign(self) -> None:
        # Out of the running for good: the harness replaces this process.
        self.elector.resign(hold_off=3600.0)

    def close(self) -> None:
        self.elector.close()


class KazooAgent:
    def __init__(self, args: argparse.Namespace) -> None:
        from kazoo.client import KazooClient, KazooState

        self._states = KazooState
        self.name = args.name
        self.client = KazooClient(hosts=args.zookeeper, timeout=args.budget)
        self.path = f"/nccoord-bench/{args.group}"
        self.step_down = threading.Event()
        self.reason = "resigned"
        self.thread: threading.Thread | None = None

    def join(self) -> None:
        self.client.add_listener(self._on_state)
        self.client.start(timeout=30)
        election = self.client.Election(self.path, identifier=self.name)
        self.thread = threading.Thread(target=election.run, args=(self._lead,))
        self.thread.daemon = True
        self.thread.start()
        _wait_for(lambda: self.name in election.contenders())

    def _on_state(self, state: Any) -> None:
        # kazoo's advice: a suspended or lost connection ends the leadership.
        if state in (self._states.SUSPENDED, self._states.LOST):
            self.reason = f"connection {state}"
            self.step_down.set()

    def _lead(self) -> None:
        report("elected")
        self.step_down.wait()
        report("revoked", reason=self.reason)

    def resign(self) -> None:
        self.reason = "resigned"
        self.step_down.set()
        if self.thread is not None:
            self.thread.join(10)  # the recipe deletes its lock node on return

    def close(self) -> None:
        self.step_down.set()
        self.client.stop()
        self.client.close()


class KafkaGroupAgent:
    """The partition's assignee leads; assignments come from the coordinator."""

    def __init__(self, args: argparse.Namespace) -> None:
        from confluent_kafka import Consumer

        session_ms = int(args.budget * 1000)
        self.consumer = Consumer(
            {
                "bootstrap.servers": args.bootstrap,
                "group.id": args.group,
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": session_ms // 3,
                # Sticky, so that a member joining does not move the leader.
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
            }
        )
        self.topic = args.group_topic
        self.assigned = threading.Event()
        self.leave = threading.Event()
        self.left = threading.Event()
        self.leading = False
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def join(self) -> None:
        self.consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.thread.start()
        self.assigned.wait(READY_WAIT)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned.set()
        if partitions and not self.leading:
            self.leading = True
            report("elected")

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._stop_leading(partitions, "revoked")

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._stop_leading(partitions, "lost")

    def _stop_leading(self, partitions: list[Any], reason: str) -> None:
        if partitions and self.leading:
            self.leading = False
            report("revoked", reason=reason)

    def _poll(self) -> None:
        # The consumer is used from this thread only, its close included.
        while not self.leave.is_set():
            self.consumer.poll(0.05)
        self.consumer.close()  # leaves the group; revokes first
        self.left.set()

    def resign(self) -> None:
        self.close()

    def close(self) -> None:
        self.leave.set()
        if self.thread.is_alive():
            self.left.wait(15)


def eager_reader_agent(args: argparse.Namespace) -> NccoordAgent:
    """nccoord with its reader's poll returning as soon as a record is there.

    A what-if, not the library as shipped: ``KafkaReader.poll`` calls
    ``consume(500, timeout)``, which waits out the whole timeout unless 500
    records arrive, so each read of the elector waits up to 50 ms. This
    variant polls for the first record and then takes what is already
    fetched; it shows what that wait costs a handover.
    """
    from nccoord import kafka_log
    from nccoord.log import Batch

    def poll(self: Any, timeout: float) -> Batch:
        batch = Batch()
        first = self._consumer.poll(timeout)
        if first is not None:
            for message in [first, *self._consumer.consume(499, 0)]:
                self._take(message, batch)
        return batch

    kafka_log.KafkaReader.poll = poll  # type: ignore[method-assign]
    return NccoordAgent(args)


SYSTEMS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "nccoord": NccoordAgent,
    "nccoord-eager": eager_reader_agent,
    "kazoo": KazooAgent,
    "kafka-group": KafkaGroupAgent,
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agent")
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("--name", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--zookeeper", default="")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--group-topic", default="")
    parser.add_argument("--standby", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    agent = SYSTEMS[args.system](args)
    report("loaded")
    if args.standby and sys.stdin.readline().strip() != "join":
        return 0
    agent.join()
    report("ready")
    for line in sys.stdin:
        if line.strip() == "resign":
            report("resigning")
            agent.resign()
            break
    agent.close()
    report("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
