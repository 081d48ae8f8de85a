"""Demo agents as real OS processes, for tests that kill and pause them."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from nccoord.topics import TopicNames

Report = dict[str, Any]


class AgentProcesses:
    """Starts ``nccoord.demo_agent`` processes and collects their reports."""

    def __init__(self, bootstrap: str, topics: TopicNames, group: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.group = group
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.reports: queue.Queue[tuple[str, Report]] = queue.Queue()
        self.seen: list[tuple[str, Report]] = []
        self._taken: set[int] = set()

    def start(self, name: str, lease: float = 2.0, *extra: str) -> None:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nccoord.demo_agent",
                "--bootstrap",
                self.bootstrap,
                "--group",
                self.group,
                "--name",
                name,
                "--lease",
                str(lease),
                "--prefix",
                self.topics.prefix,
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
            self.reports.put((name, json.loads(line)))

    def wait_for(
        self, event: str, timeout: float, agent: str | None = None
    ) -> tuple[str, Report]:
        """The earliest report of kind ``event`` (from ``agent``, if given)
        not returned before, waiting for it if it has not come yet."""
        deadline = time.monotonic() + timeout
        while True:
            for index, (name, report) in enumerate(self.seen):
                fits = report["event"] == event and agent in (None, name)
                if fits and index not in self._taken:
                    self._taken.add(index)
                    return name, report
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                self.seen.append(self.reports.get(timeout=left))
            except queue.Empty:
                break
        raise AssertionError(
            f"no {event!r} report{' from ' + agent if agent else ''} in {timeout}s; "
            f"saw {self.seen[-10:]}"
        )

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.processes[name].send_signal(sig)
        if sig == signal.SIGKILL:
            self.processes[name].wait()

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()
