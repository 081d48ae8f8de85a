"""A small agent that embeds nccoord's coordination services.

Run several of these against one broker, in one group::

    python examples/coord_agent.py --bootstrap 127.0.0.1:9092 --group demo --name a1

Each agent

- takes part in the group's lease election (the leader decides rounds),
- sends heartbeats and watches the group's membership,
- proposes a value for round 1, and for round r+1 once round r is decided,
  and prints every decided result,
- applies overrides for its target (its own name) and prints what is in
  force, refusing unsigned or forged ones when given ``--trusted-key``,
- answers the control signals start, stop, reboot and failover.

It prints one line per event, or one JSON object per line with ``--json``,
and stops when its standard input closes, after ``--duration`` seconds, or
on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import threading
import time
from typing import Any

from confluent_kafka.admin import AdminClient

from nccoord import Timing, TopicNames, ensure_topics
from nccoord.consensus import Result
from nccoord.coordinator import Coordinator
from nccoord.events import ControlSignal
from nccoord.headers import EventMeta
from nccoord.membership import MembershipTiming, Transition
from nccoord.overrides import Outcome

logger = logging.getLogger("coord_agent")

VALUES = ("red", "green", "blue")


class Agent:
    """Proposes one value per round and reports what the group decides."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name = args.name
        self.json = args.json
        self.rounds = args.rounds
        self.random = random.Random(f"{args.seed}/{args.name}")
        self.working = threading.Event()
        self.working.set()
        self.proposed: set[int] = set()
        self.lock = threading.Lock()
        verifier = None
        if args.trusted_key:
            from nccoord.signing import Verifier

            keys = dict(item.split("=", 1) for item in args.trusted_key)
            verifier = Verifier(keys)
        self.coordinator = Coordinator(
            args.bootstrap,
            args.group,
            args.name,
            names=TopicNames(args.prefix),
            timing=Timing(lease=args.lease),
            membership=MembershipTiming(
                interval=args.heartbeat, suspect_after=4, dead_after=8
            ),
            verifier=verifier,
        )
        c = self.coordinator
        c.elector.on_elected(lambda term: self.say("elected", term=term))
        c.elector.on_revoked(
            lambda term, why: self.say("revoked", term=term, reason=why)
        )
        c.on_result(self.decided)
        c.on_override(self.override)
        c.on_transition(self.transition)
        for signal in ("start", "stop", "reboot", "failover"):
            c.on_control(signal, self.control)  # type: ignore[arg-type]

    def say(self, event: str, **fields: Any) -> None:
        if self.json:
            line = json.dumps({"event": event, "mono": time.monotonic(), **fields})
        else:
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{time.strftime('%H:%M:%S')} {self.name:>8} {event:<10} {detail}"
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    # -- consensus -----------------------------------------------------------

    def propose(self, round: int) -> None:
        with self.lock:
            if round in self.proposed or round > self.rounds:
                return
            self.proposed.add(round)
        value = self.random.choice(VALUES)
        self.say("proposed", round=round, value=value)
        self.coordinator.propose(round, value)

    def decided(self, result: Result) -> None:
        self.say(
            "decided",
            round=result.round,
            value=result.value,
            term=result.term,
            voters=list(result.voters),
        )
        if self.working.is_set():
            threading.Timer(self.args.pace, self.propose, (result.round + 1,)).start()

    # -- overrides, membership, control --------------------------------------

    def override(self, outcome: Outcome) -> None:
        active = outcome.override
        if active is not None and active.target != self.name:
            return
        self.say(
            "override",
            id=outcome.id,
            outcome=outcome.reason,
            value=active.value if active else None,
            in_force=[o.id for o in self.coordinator.in_force(self.name)],
        )

    def transition(self, change: Transition) -> None:
        if change.group == self.args.group:
            self.say("member", agent=change.agent, state=change.after)

    def control(self, signal: ControlSignal, meta: EventMeta | None) -> None:
        self.say("control", signal=signal.signal, reason=signal.reason)
        if signal.signal == "stop":
            self.working.clear()
        elif signal.signal == "start":
            self.working.set()
            decided = self.coordinator.decided()
            self.propose(max(decided, default=0) + 1)
        elif signal.signal == "reboot":
            # A real agent would restart its own work here; the coordinator
            # (and with it the agent's place in the group) stays up.
            self.working.clear()
            self.working.set()

    def run(self) -> None:
        self.coordinator.start()
        ready = self.coordinator.wait_ready(30)
        self.say("ready", ready=ready)
        self.propose(1)
        if self.args.duration:
            time.sleep(self.args.duration)
        else:
            sys.stdin.read()  # until our input closes
        self.working.clear()
        self.say("closing", decided=len(self.coordinator.decided()))
        self.coordinator.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of Kafka")
    parser.add_argument("--group", default="demo")
    parser.add_argument("--name", required=True, help="this agent's id")
    parser.add_argument("--prefix", default="", help="topic name prefix")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--heartbeat", type=float, default=0.5, help="seconds")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pace", type=float, default=0.3, help="seconds per round")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="KEYID=BASE64",
        help="accept only overrides signed by these Ed25519 public keys",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(message)s",
    )
    # Creating the system topics is idempotent; every agent may try.
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    ensure_topics(admin, TopicNames(args.prefix))
    try:
        Agent(args).run()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
