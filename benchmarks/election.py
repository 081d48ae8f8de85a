"""Failover, handover, safety and idle cost of leader election, three ways.

A :class:`Pool` runs N candidates of one system as separate processes
(:mod:`benchmarks.agent`) plus one spare on standby, already past its
imports, that joins when a candidate is killed or leaves. Times come from the
agents' own reports, stamped with the machine's monotonic clock; the only
time the harness stamps itself is the moment right before it sends SIGKILL.

- failover: SIGKILL the leader; time until another candidate reports
  ``elected``;
- handover: the leader resigns; time from its ``resigning`` report until
  another candidate reports ``elected``;
- safety: every ``elected`` .. ``revoked`` interval (a killed leader's ends
  at the kill) is kept, and any overlap of two candidates' intervals counted;
- idle cost: RSS and CPU of each agent over a window, and the bytes on its
  TCP connections (from ``ss``), plus the lease-log records nccoord writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from nccoord import broker

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ("nccoord", "kazoo", "kafka-group")
START_TIMEOUT = 90.0
SETTLE = 0.3

Event = dict[str, Any]


@dataclass(frozen=True)
class Setup:
    """Where the agents find their servers, and where their logs go."""

    bootstrap: str
    zookeeper: str
    prefix: str
    group_topic: str
    log_dir: Path


class TrialError(RuntimeError):
    """A trial did not reach its end in time (no new leader, no agent ready)."""


class Agent:
    """One agent process and a thread that forwards its reports."""

    def __init__(
        self,
        name: str,
        command: list[str],
        sink: queue.Queue[tuple[str, Event]],
        log: TextIO,
    ) -> None:
        self.name = name
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            start_new_session=True,
            preexec_fn=broker._death_signal_setter(),
        )
        self.killed_at: float | None = None
        self._reader = threading.Thread(target=self._forward, args=(sink,))
        self._reader.daemon = True
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _forward(self, sink: queue.Queue[tuple[str, Event]]) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                sink.put((self.name, json.loads(line)))
        sink.put((self.name, {"event": "exited", "mono": time.monotonic()}))

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()

    def kill(self) -> float:
        self.killed_at = time.monotonic()
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)
        return self.killed_at

    def end_input(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()


@dataclass
class Interval:
    """A stretch in which one agent acted as leader."""

    agent: str
    start: float
    end: float | None = None
    how_ended: str = ""


@dataclass
class Safety:
    intervals: int = 0
    overlaps: int = 0
    overlap_seconds: float = 0.0
    details: list[str] = field(default_factory=list)


class Pool:
    """N candidates of one system in one election group, plus a spare."""

    def __init__(
        self, system: str, n: int, budget: float, setup: Setup, rng: random.Random
    ) -> None:
        self.system = system
        self.n = n
        self.budget = budget
        self.setup = setup
        self.rng = rng
        self.group = f"{system}-n{n}-b{budget:g}-{uuid.uuid4().hex[:8]}"
        self.events: queue.Queue[tuple[str, Event]] = queue.Queue()
        self.log: list[tuple[str, Event]] = []
        self.agents: dict[str, Agent] = {}
        self.spare: Agent | None = None
        self.intervals: list[Interval] = []
        self._open: dict[str, Interval] = {}
        self._count = 0
        self._stderr = (setup.log_dir / f"{self.group}.log").open("w")

    # -- processes -----------------------------------------------------------

    def _spawn(self, standby: bool) -> Agent:
        self._count += 1
        name = f"{self.system}-{self._count}"
        command = [
            sys.executable,
            "-m",
            "benchmarks.agent",
            self.system,
            "--name",
            name,
            "--group",
            self.group,
            "--budget",
            str(self.budget),
            "--bootstrap",
            self.setup.bootstrap,
            "--zookeeper",
            self.setup.zookeeper,
            "--prefix",
            self.setup.prefix,
            "--group-topic",
            self.setup.group_topic,
        ]
        if standby:
            command.append("--standby")
        return Agent(name, command, self.events, self._stderr)

    def start(self) -> None:
        """Start N candidates and the spare; return once a leader acts."""
        since = len(self.log)
        for _ in range(self.n):
            agent = self._spawn(standby=False)
            self.agents[agent.name] = agent
        self.spare = self._spawn(standby=True)
        names = set(self.agents)
        self.wait(
            lambda a, e: e["event"] == "ready" and a in names,
            START_TIMEOUT,
            since,
            count=self.n,
        )
        self.wait(lambda a, e: e["event"] == "loaded" and a == self.spare_name, 60, 0)
        if self.leader() is None:
            self.wait(lambda a, e: e["event"] == "elected", START_TIMEOUT, since)
        self.settle(1.0)

    @property
    def spare_name(self) -> str:
        assert self.spare is not None
        return self.spare.name

    def replace(self, gone: str) -> None:
        """The spare joins in place of ``gone``; a new spare loads."""
        assert self.spare is not None
        self.agents.pop(gone, None)
        joining, since = self.spare, len(self.log)
        joining.send("join")
        self.agents[joining.name] = joining
        self.spare = self._spawn(standby=True)
        self.wait(lambda a, e: e["event"] == "ready" and a == joining.name, 60, since)
        self.wait(lambda a, e: e["event"] == "loaded" and a == self.spare_name, 60, 0)

    def settle(self, base: float = SETTLE) -> None:
        """Let the group calm down; a random extra spreads the kill's phase
        over the renew, heartbeat and ping cycles."""
        self.drain(base + self.rng.uniform(0, self.budget / 4))

    def stop(self) -> None:
        everyone = [*self.agents.values(), *([self.spare] if self.spare else [])]
        for agent in everyone:
            agent.end_input()
        deadline = time.monotonic() + 20
        for agent in everyone:
            try:
                agent.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait(10)
        self.drain(0.2)
        now = time.monotonic()
        for interval in self._open.values():
            interval.end, interval.how_ended = now, "still leading at the end"
        self._open.clear()
        self._stderr.close()

    # -- events --------------------------------------------------------------

    def _take(self, timeout: float) -> bool:
        try:
            name, event = self.events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return False
        self.log.append((name, event))
        self._track(name, event)
        return True

    def _track(self, name: str, event: Event) -> None:
        kind = event["event"]
        if kind == "elected":
            interval = Interval(name, event["mono"])
            self._open[name] = interval
            self.intervals.append(interval)
        elif kind in ("revoked", "exited") and name in self._open:
            interval = self._open.pop(name)
            agent = self.agents.get(name)
            if agent is not None and agent.killed_at is not None:
                interval.end, interval.how_ended = agent.killed_at, "killed"
            else:
                interval.end = event["mono"]
                interval.how_ended = event.get("reason", kind)

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._take(left)

    def wait(
        self,
        match: Callable[[str, Event], bool],
        timeout: float,
        since: int,
        count: int = 1,
    ) -> Event:
        """The ``count``-th event at or after ``since`` that matches."""
        deadline = time.monotonic() + timeout
        seen, index = 0, since
        while True:
            while index < len(self.log):
                name, event = self.log[index]
                index += 1
                if match(name, event):
                    seen += 1
                    if seen == count:
                        return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TrialError(
                    f"{self.group}: waited {timeout:.0f} s in vain; agent logs in "
                    f"{self.setup.log_dir}"
                )
            self._take(min(left, 0.5))

    def leader(self) -> str | None:
        """The live agent that most recently reported ``elected`` and still leads."""
        live = [i for i in self._open.values() if i.agent in self.agents]
        return max(live, key=lambda i: i.start).agent if live else None

    # -- trials --------------------------------------------------------------

    def failover(self) -> float:
        """Kill the leader; seconds until another candidate acts."""
        victim = self._leader_or_wait()
        since = len(self.log)
        killed_at = self.agents[victim].kill()
        self._track(victim, {"event": "exited", "mono": killed_at})
        elected = self.wait(
            lambda a, e: e["event"] == "elected" and a != victim,
            4 * self.budget + 20,
            since,
        )
        self.replace(victim)
        self.settle()
        return float(elected["mono"]) - killed_at

    def handover(self) -> float:
        """The leader resigns; seconds from its resigning to the next leader."""
        leaving = self._leader_or_wait()
        since = len(self.log)
        self.agents[leaving].send("resign")
        resigning = self.wait(
            lambda a, e: e["event"] == "resigning" and a == leaving, 20, since
        )
        elected = self.wait(
            lambda a, e: e["event"] == "elected" and a != leaving,
            4 * self.budget + 20,
            since,
        )
        self.wait(lambda a, e: e["event"] == "exited" and a == leaving, 30, since)
        self.replace(leaving)
        self.settle()
        return float(elected["mono"]) - float(resigning["mono"])

    def _leader_or_wait(self) -> str:
        leader = self.leader()
        if leader is None:
            since = len(self.log)
            self.wait(lambda a, e: e["event"] == "elected", 4 * self.budget + 20, since)
            leader = self.leader()
        if leader is None:
            raise TrialError(f"{self.group}: no leader")
        return leader

    def safety(self) -> Safety:
        """Count the moments two agents acted as leader at once."""
        closed = sorted(
            (i for i in self.intervals if i.end is not None), key=lambda i: i.start
        )
        result = Safety(intervals=len(closed))
        for k, first in enumerate(closed):
            assert first.end is not None
            for second in closed[k + 1 :]:
                if second.start >= first.end:
                    break
                if second.agent == first.agent:
                    continue
                overlap = min(first.end, second.end or first.end) - second.start
                result.overlaps += 1
                result.overlap_seconds += overlap
                result.details.append(
                    f"{first.agent} ({first.how_ended}) and {second.agent} "
                    f"overlapped {overlap * 1000:.1f} ms"
                )
        return result


@contextlib.contextmanager
def running(
    system: str, n: int, budget: float, setup: Setup, rng: random.Random
) -> Iterator[Pool]:
    pool = Pool(system, n, budget, setup, rng)
    try:
        pool.start()
        yield pool
    finally:
        pool.stop()


def run_trials(
    system: str,
    n: int,
    budget: float,
    setup: Setup,
    rng: random.Random,
    *,
    kind: str,
    repeats: int,
) -> dict[str, Any]:
    """``repeats`` failovers or handovers in one pool; samples in seconds."""
    samples: list[float] = []
    errors: list[str] = []
    started = time.monotonic()
    with running(system, n, budget, setup, rng) as pool:
        trial = pool.failover if kind == "failover" else pool.handover
        for _ in range(repeats):
            try:
                samples.append(trial())
            except TrialError as exc:
                errors.append(str(exc))
                break
    safety = pool.safety()
    return {
        "system": system,
        "kind": kind,
        "candidates": n,
        "budget_s": budget,
        "samples_s": samples,
        "errors": errors,
        "safety": {
            "leader_intervals": safety.intervals,
            "overlaps": safety.overlaps,
            "overlap_s": safety.overlap_seconds,
            "details": safety.details[:10],
        },
        "wall_s": time.monotonic() - started,
    }


# -- idle cost -----------------------------------------------------------------

_SS_USER = re.compile(r"pid=(\d+)")
_SS_BYTES = re.compile(r"bytes_(sent|received):(\d+)")


def socket_bytes(pids: set[int]) -> dict[int, int]:
    """Bytes sent plus received so far on each process's open TCP sockets.

    Empty when ``ss`` (iproute2) is not installed.
    """
    if shutil.which("ss") is None:
        return {}
    output = subprocess.run(
        ["ss", "-tinpH"], capture_output=True, text=True, check=False, timeout=20
    ).stdout
    totals = dict.fromkeys(pids, 0)
    owner: int | None = None
    for line in output.splitlines():
        if not line.startswith((" ", "\t")):
            found = _SS_USER.search(line)
            owner = int(found.group(1)) if found else None
            continue
        if owner in totals:
            totals[owner] += sum(int(v) for _, v in _SS_BYTES.findall(line))
    return totals


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def idle_cost(
    system: str,
    n: int,
    budget: float,
    window: float,
    setup: Setup,
    rng: random.Random,
    lease_records: Callable[[str], tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Per-agent CPU, RSS and socket bytes of N idle candidates over ``window``."""
    with running(system, n, budget, setup, rng) as pool:
        pids = {agent.pid for agent in pool.agents.values()}
        cpu0 = {pid: _cpu_seconds(pid) for pid in pids}
        net0 = socket_bytes(pids)
        log0 = lease_records(pool.group) if lease_records else None
        t0 = time.monotonic()
        pool.drain(window)
        elapsed = time.monotonic() - t0
        cpu1 = {pid: _cpu_seconds(pid) for pid in pids}
        net1 = socket_bytes(pids)
        log1 = lease_records(pool.group) if lease_records else None
        rss = {pid: _rss_bytes(pid) for pid in pids}
        changes = sum(1 for _, e in pool.log if e["event"] == "elected")
    result: dict[str, Any] = {
        "system": system,
        "candidates": n,
        "budget_s": budget,
        "window_s": elapsed,
        "cpu_percent_per_agent": [
            100 * (cpu1[p] - cpu0[p]) / elapsed for p in sorted(pids)
        ],
        "rss_mib_per_agent": [rss[p] / 2**20 for p in sorted(pids)],
        "socket_bytes_per_s_per_agent": [
            (net1[p] - net0[p]) / elapsed for p in sorted(pids) if p in net0
        ],
        "elections_seen": changes,
    }
    if log0 is not None and log1 is not None:
        result["lease_records_per_s"] = (log1[0] - log0[0]) / elapsed
        result["lease_bytes_per_s"] = (log1[1] - log0[1]) / elapsed
    return result
