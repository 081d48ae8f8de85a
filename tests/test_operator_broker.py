"""Metrics during the demo and the live watch view, against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from nccoord.topics import TopicNames

from .agents import AgentProcesses

pytestmark = pytest.mark.broker

NAMES = (
    "nccoord_leader",
    "nccoord_term",
    "nccoord_elections_total",
    "nccoord_failovers_total",
    "nccoord_lease_renew_latency_seconds_bucket",
    "nccoord_lease_renew_latency_seconds_count",
    "nccoord_events_consumed_total",
    "nccoord_events_duplicate_total",
    "nccoord_deadletter_total",
    "nccoord_overrides_in_force",
)


def samples(text: str) -> dict[str, list[tuple[str, float]]]:
    """Sample lines of the text format by metric name: (labels, value)."""
    found: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        found.setdefault(name, []).append((labels.rstrip("}"), float(value)))
    return found


def test_demo_serves_every_metric_while_it_runs(kafka_bootstrap: str) -> None:
    group = f"demo-{uuid.uuid4().hex[:8]}"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nccoord.cli",
            "demo",
            "--bootstrap",
            kafka_bootstrap,
            "--group",
            group,
            "--duration",
            "25",
            "--kill-every",
            "5",
            "--metrics-port",
            "0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    try:
        first = json.loads(demo.stdout.readline())
        assert first["event"] == "metrics"
        assert first["url"].startswith("http://127.0.0.1:")
        for line in demo.stdout:
            if "failover_ms" in json.loads(line):
                break
        time.sleep(1.0)  # let the follower read the new term
        with urllib.request.urlopen(first["url"], timeout=10) as response:
            text = response.read().decode()
    finally:
        demo.kill()
        demo.wait()
    found = samples(text)
    missing = [name for name in NAMES if name not in found]
    assert not missing, f"missing {missing} in:\n{text}"
    leaders = [
        labels
        for labels, value in found["nccoord_leader"]
        if f'group="{group}"' in labels and value == 1.0
    ]
    assert len(leaders) == 1, found["nccoord_leader"]
    by_group = dict(found["nccoord_failovers_total"])
    assert by_group[f'group="{group}"'] >= 1
    assert dict(found["nccoord_elections_total"])[f'group="{group}"'] >= 2
    assert (
        dict(found["nccoord_lease_renew_latency_seconds_count"])[f'group="{group}"'] > 0
    )
    consumed = dict(found["nccoord_events_consumed_total"])
    assert consumed['topic="system-heartbeat"'] > 0
    assert consumed['topic="system-control"'] > 0


def test_watch_live_view_shows_leader_and_agents(
    kafka_bootstrap: str, topics: TopicNames, group: str, agents: AgentProcesses
) -> None:
    agents.start("tv-1", 2.0, "--heartbeat-every", "1")
    agents.start("tv-2", 2.0, "--heartbeat-every", "1")
    leader, elected = agents.wait_for("elected", timeout=30)
    time.sleep(1.5)  # a heartbeat from each
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nccoord.cli",
            "watch",
            "--live",
            "--duration",
            "3",
            "--bootstrap",
            kafka_bootstrap,
            "--prefix",
            topics.prefix,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if group in line]
    group_row = next(row for row in rows if leader in row and "of 2s" in row)
    assert f" {elected['term']} " in group_row
    for name in ("tv-1", "tv-2"):
        assert any(name in row and "alive" in row for row in rows), done.stdout
