"""``nccoord demo``: agents elect a leader through a real broker while the
demo kills them.

Each agent is its own OS process running an :class:`~nccoord.elector.Elector`
(:mod:`nccoord.demo_agent`). Every ``--kill-every`` seconds the demo sends
SIGKILL to the current leader and starts a fresh candidate in its place, then
measures how long the group went without a leader. Where no broker can be
had (no Java, no Maven, no Docker), the agents run as threads over the
in-memory log, and the demo says so.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from .candidate import Timing
from .elector import Elector
from .errors import BrokerError, ConfigError
from .lease import LeaseRecord, Renew
from .log import MemoryLog

if TYPE_CHECKING:
    from .metrics import Metrics

logger = logging.getLogger(__name__)

AgentEvent = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class DemoOptions:
    bootstrap: str | None = None
    agents: int = 3
    duration: float = 20.0
    lease: float = 2.0
    kill_every: float = 6.0
    json: bool = False
    group: str = "demo"
    metrics_port: int | None = None


# -- what happened, and the summary of it ------------------------------------


@dataclass
class Timeline:
    """Every agent's reports, on the demo's clock (seconds since start)."""

    start: float
    events: list[dict[str, Any]] = field(default_factory=list)
    intervals: list[tuple[str, float, float]] = field(default_factory=list)
    leading_since: dict[str, float] = field(default_factory=dict)
    kills: list[float] = field(default_factory=list)
    failovers: list[float] = field(default_factory=list)

    def t(self, mono: float) -> float:
        return round(mono - self.start, 3)

    def elected(self, agent: str, term: int, mono: float) -> dict[str, Any]:
        self.leading_since[agent] = mono
        event: dict[str, Any] = {"event": "elected", "agent": agent, "term": term}
        if self.kills and len(self.failovers) < len(self.kills):
            self.failovers.append(mono - self.kills[-1])
            event["failover_ms"] = round(self.failovers[-1] * 1000, 1)
        return self._add(event, mono)

    def revoked(
        self, agent: str, term: int, reason: str, mono: float
    ) -> dict[str, Any]:
        self._end(agent, mono)
        event = {"event": "revoked", "agent": agent, "term": term, "reason": reason}
        return self._add(event, mono)

    def killed(self, agent: str, term: int, mono: float) -> dict[str, Any]:
        self._end(agent, mono)
        if len(self.failovers) < len(self.kills):
            # The previous kill never saw a successor; it is not a failover.
            self.kills.pop()
        self.kills.append(mono)
        return self._add({"event": "killed", "agent": agent, "term": term}, mono)

    def finish(self, mono: float) -> None:
        for agent in list(self.leading_since):
            self._end(agent, mono)

    def leader(self) -> str | None:
        return next(iter(self.leading_since), None)

    def _end(self, agent: str, mono: float) -> None:
        since = self.leading_since.pop(agent, None)
        if since is not None:
            self.intervals.append((agent, since, mono))

    def _add(self, event: dict[str, Any], mono: float) -> dict[str, Any]:
        event["t"] = self.t(mono)
        self.events.append(event)
        return event

    def summary(self, backend: str) -> dict[str, Any]:
        terms = [e["term"] for e in self.events if e["event"] == "elected"]
        times = sorted(self.failovers)
        return {
            "event": "summary",
            "backend": backend,
            "elections": len(terms),
            "failovers": len(times),
            "failover_ms": {
                "p50": round(statistics.median(times) * 1000, 1) if times else 0.0,
                "max": round(times[-1] * 1000, 1) if times else 0.0,
            },
            "overlaps": count_overlaps(self.intervals),
            "terms_increasing": all(a < b for a, b in itertools.pairwise(terms)),
        }


def count_overlaps(intervals: list[tuple[str, float, float]]) -> int:
    """Pairs of different agents whose leadership intervals intersect."""
    overlaps = 0
    for i, (agent_a, start_a, end_a) in enumerate(intervals):
        for agent_b, start_b, end_b in intervals[i + 1 :]:
            if agent_a != agent_b and start_a < end_b and start_b < end_a:
                overlaps += 1
    return overlaps


# -- agents: processes over Kafka, threads over the in-memory log ------------


class Agent(Protocol):
    name: str

    def kill(self) -> None: ...

    def close(self) -> None: ...


class ProcessAgent:
    """An agent in its own process; its reports come back on a pipe."""

    def __init__(
        self,
        name: str,
        args: list[str],
        events: queue.Queue[AgentEvent],
        stderr: IO[bytes],
    ) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nccoord.demo_agent", "--name", name, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        self._reader = threading.Thread(
            target=self._read, args=(events,), daemon=True, name=f"demo-{name}"
        )
        self._reader.start()

    def _read(self, events: queue.Queue[AgentEvent]) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                events.put((self.name, json.loads(line)))
            except ValueError:
                logger.warning("agent %s wrote %r", self.name, line)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class ThreadAgent:
    """An agent as a thread over the in-memory log (no broker available)."""

    def __init__(
        self,
        name: str,
        log: MemoryLog,
        group: str,
        lease: float,
        events: queue.Queue[AgentEvent],
    ) -> None:
        self.name = name
        self._dead = False
        self.elector = Elector(log, group, name, timing=Timing(lease=lease))

        def put(event: str, **fields: Any) -> None:
            if not self._dead:
                events.put((name, {"event": event, "mono": time.monotonic(), **fields}))

        self.elector.on_elected(lambda term: put("elected", term=term))
        self.elector.on_revoked(lambda term, why: put("revoked", term=term, reason=why))
        self.elector.start()

    def kill(self) -> None:
        # A crash: no more reports, no release; the thread just stops.
        self._dead = True
        self.elector.close()

    def close(self) -> None:
        self.kill()


# -- the run ------------------------------------------------------------------


class Demo:
    def __init__(self, options: DemoOptions, out: IO[str]) -> None:
        self.options = options
        self.out = out
        self.events: queue.Queue[AgentEvent] = queue.Queue()
        self.agents: dict[str, Agent] = {}
        self.terms: dict[str, int] = {}
        self.spawned = 0
        self.backend = "kafka"
        self.timeline = Timeline(time.monotonic())
        self.make_agent: Callable[[str], Agent]
        self.metrics: Metrics | None = None

    def say(self, event: dict[str, Any], text: str) -> None:
        if self.options.json:
            self.out.write(json.dumps({**event, "group": self.options.group}) + "\n")
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def spawn(self) -> None:
        self.spawned += 1
        name = f"agent-{self.spawned}"
        self.agents[name] = self.make_agent(name)

    def run(self, backend: str) -> dict[str, Any]:
        self.backend = backend
        opts = self.options
        for _ in range(opts.agents):
            self.spawn()
        self.timeline = Timeline(time.monotonic())
        end = self.timeline.start + opts.duration
        next_kill = self.timeline.start + opts.kill_every
        try:
            while (now := time.monotonic()) < end:
                self._drain(min(end, next_kill) - now)
                if time.monotonic() >= next_kill and self._kill_leader():
                    next_kill += opts.kill_every
        finally:
            for agent in self.agents.values():
                agent.close()
        self.timeline.finish(time.monotonic())
        summary = self.timeline.summary(backend)
        self.say(summary, self._summary_text(summary))
        return summary

    def _drain(self, timeout: float) -> None:
        try:
            name, report = self.events.get(timeout=max(timeout, 0.01))
        except queue.Empty:
            return
        kind, mono = report.get("event"), float(report.get("mono", time.monotonic()))
        if kind == "elected":
            self.terms[name] = report["term"]
            event = self.timeline.elected(name, report["term"], mono)
            extra = (
                f"  failover {event['failover_ms']:.0f} ms"
                if "failover_ms" in event
                else ""
            )
            self.say(
                event,
                f"{event['t']:7.2f}s  {name:<9} elected   term {report['term']}{extra}",
            )
        elif kind == "renewed" and self.metrics is not None:
            self.metrics.renewed(self.options.group, float(report["seconds"]))
        elif kind == "revoked":
            why = report["reason"]
            event = self.timeline.revoked(name, report["term"], why, mono)
            text = f"{event['t']:7.2f}s  {name:<9} revoked   term {report['term']}"
            self.say(event, f"{text} ({why})")

    def _kill_leader(self) -> bool:
        leader = self.timeline.leader()
        if leader is None or leader not in self.agents:
            return False
        self.agents.pop(leader).kill()
        term = self.terms.get(leader, 0)
        event = self.timeline.killed(leader, term, time.monotonic())
        how = "SIGKILL" if self.backend == "kafka" else "thread stopped"
        self.say(
            event, f"{event['t']:7.2f}s  {leader:<9} killed    term {term} ({how})"
        )
        self.spawn()
        return True

    @staticmethod
    def _summary_text(s: dict[str, Any]) -> str:
        return (
            f"\nsummary ({s['backend']}): {s['elections']} elections, "
            f"{s['failovers']} failovers, failover p50 "
            f"{s['failover_ms']['p50']:.0f} ms max {s['failover_ms']['max']:.0f} ms, "
            f"overlaps {s['overlaps']}, "
            f"terms increasing: {'yes' if s['terms_increasing'] else 'NO'}"
        )


def run_demo(options: DemoOptions, out: IO[str] | None = None) -> dict[str, Any]:
    """Run the demo and return its summary (also printed)."""
    out = out or sys.stdout
    broker = None
    bootstrap = options.bootstrap
    if bootstrap is None:
        from .broker import start_broker

        try:
            broker = start_broker(progress=_progress)
            bootstrap = broker.bootstrap
        except BrokerError as exc:
            return _run_in_memory(options, out, str(exc))
    try:
        return _run_on_kafka(options, out, bootstrap)
    finally:
        if broker is not None:
            broker.stop()


def _run_on_kafka(options: DemoOptions, out: IO[str], bootstrap: str) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient

    from .topics import ensure_topics

    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}))
    demo = Demo(options, out)
    follower = None
    if options.metrics_port is not None:
        from .metrics import Metrics
        from .monitor import ClusterFollower, ClusterView

        demo.metrics = Metrics()
        follower = ClusterFollower(bootstrap, ClusterView(metrics=demo.metrics))
        follower.start()
    if not options.json:
        out.write(
            f"nccoord demo: {options.agents} agents in group {options.group!r}, "
            f"lease {options.lease:g}s, Kafka at {bootstrap}; killing the leader "
            f"every {options.kill_every:g}s for {options.duration:g}s\n"
        )
    args = [
        "--bootstrap",
        bootstrap,
        "--group",
        options.group,
        "--lease",
        str(options.lease),
        "--heartbeat-every",
        "1",
    ]
    if demo.metrics is not None:
        args.append("--report-renewals")
    with (
        _serving(demo.metrics, options, out),
        tempfile.NamedTemporaryFile(
            prefix="nccoord-demo-", suffix=".log", delete=False
        ) as log,
    ):
        demo.make_agent = lambda name: ProcessAgent(name, args, demo.events, log)
        try:
            summary = demo.run("kafka")
        finally:
            if follower is not None:
                follower.close()
    if not options.json:
        out.write(f"agents' own logs: {log.name}\n")
    else:
        os.unlink(log.name)
    return summary


def _run_in_memory(options: DemoOptions, out: IO[str], why: str) -> dict[str, Any]:
    notice = (
        f"backend memory: no Kafka broker could be started ({why}); "
        "the agents are threads over the in-memory log"
    )
    print(notice, file=sys.stderr if options.json else out, flush=True)
    log = MemoryLog()
    demo = Demo(options, out)
    observer = None
    if options.metrics_port is not None:
        from .metrics import Metrics

        demo.metrics = Metrics()
        observer = Elector(log, options.group, "observer", participate=False)
        demo.metrics.instrument(observer)
        observer.start()

    def make_agent(name: str) -> Agent:
        agent = ThreadAgent(name, log, options.group, options.lease, demo.events)

        def sent(record: LeaseRecord, seconds: float, error: Exception | None) -> None:
            if error is None and isinstance(record, Renew):
                demo.events.put((name, {"event": "renewed", "seconds": seconds}))

        if demo.metrics is not None:
            agent.elector.on_sent(sent)
        return agent

    demo.make_agent = make_agent
    with _serving(demo.metrics, options, out):
        try:
            return demo.run("memory")
        finally:
            if observer is not None:
                observer.close()


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _serving(
    metrics: Metrics | None, options: DemoOptions, out: IO[str]
) -> Iterator[None]:
    """Serve ``/metrics`` on loopback for the demo's run, if asked to."""
    if metrics is None or options.metrics_port is None:
        yield
        return
    server = metrics.serve(options.metrics_port)
    if options.json:
        out.write(json.dumps({"event": "metrics", "url": server.url}) + "\n")
    else:
        out.write(f"metrics at {server.url}\n")
    out.flush()
    try:
        yield
    finally:
        server.close()


# -- command line -------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="agents elect a leader while the demo kills them"
    )
    parser.add_argument(
        "--bootstrap", help="HOST:PORT of a Kafka cluster (default: start one)"
    )
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds")
    parser.add_argument("--lease", type=float, default=2.0, help="seconds")
    parser.add_argument("--kill-every", type=float, default=6.0, help="seconds")
    parser.add_argument(
        "--group",
        help="election group (default: demo-XXXXXX, new each run, so a run never "
        "joins a group some other process already leads)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT during the demo "
        "(0: a free port, printed at the start)",
    )
    parser.set_defaults(func=_command)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse settings the demo cannot run with, before starting anything."""
    if args.agents < 1:
        raise ConfigError(f"--agents: needs at least 1 agent, not {args.agents}")
    for name in ("duration", "kill_every"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag}: must be a positive number of seconds")
    try:
        Timing(lease=args.lease)
    except ConfigError as exc:
        raise ConfigError(f"--lease: {exc}") from None


def _command(args: argparse.Namespace) -> int:
    _check_options(args)
    if args.bootstrap:
        from .connect import check_bootstrap

        check_bootstrap(args.bootstrap)
    options = DemoOptions(
        bootstrap=args.bootstrap,
        agents=args.agents,
        duration=args.duration,
        lease=args.lease,
        kill_every=args.kill_every,
        json=args.json,
        group=args.group or f"demo-{uuid.uuid4().hex[:6]}",
        metrics_port=args.metrics_port,
    )
    summary = run_demo(options)
    if summary["elections"] == 0:
        print(
            f"nccoord demo: no leader was elected in group {options.group!r} "
            "during the run (is another process leading it?)",
            file=sys.stderr,
        )
        return 1
    return 0 if summary["overlaps"] == 0 and summary["terms_increasing"] else 1
