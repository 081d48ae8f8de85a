"""``nccoord demo``: what its user sees, on a real broker and in memory."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from nccoord.demo import DemoOptions, Timeline, _run_in_memory, count_overlaps


def test_overlaps_count_pairs_of_different_agents_leading_at_once() -> None:
    assert count_overlaps([("a", 0.0, 2.0), ("b", 2.0, 4.0)]) == 0
    assert count_overlaps([("a", 0.0, 2.5), ("b", 2.0, 4.0)]) == 1
    assert count_overlaps([("a", 0.0, 2.5), ("a", 2.0, 4.0)]) == 0


def test_timeline_measures_failover_from_kill_to_next_election() -> None:
    line = Timeline(start=100.0)
    line.elected("a", 1, 101.0)
    line.killed("a", 1, 106.0)
    event = line.elected("b", 2, 108.5)
    assert event["failover_ms"] == 2500.0
    line.finish(110.0)
    summary = line.summary("kafka")
    assert summary["elections"] == 2
    assert summary["failovers"] == 1
    assert summary["failover_ms"] == {"p50": 2500.0, "max": 2500.0}
    assert summary["overlaps"] == 0
    assert summary["terms_increasing"] is True


def test_timeline_flags_terms_that_do_not_increase() -> None:
    line = Timeline(start=0.0)
    line.elected("a", 2, 1.0)
    line.revoked("a", 2, "expired", 2.0)
    line.elected("b", 2, 3.0)
    assert line.summary("memory")["terms_increasing"] is False


@pytest.mark.broker
def test_demo_json_on_kafka_elects_three_times_without_overlap(
    kafka_bootstrap: str,
) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "nccoord.cli",
            "demo",
            "--bootstrap",
            kafka_bootstrap,
            "--group",
            "demo-test",
            "--json",
            "--duration",
            "15",
            "--kill-every",
            "4.5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    summary = lines[-1]
    assert summary["event"] == "summary"
    assert summary["backend"] == "kafka"
    assert summary["elections"] >= 3
    assert summary["failovers"] >= 2
    assert summary["overlaps"] == 0
    assert summary["terms_increasing"] is True
    assert 0 < summary["failover_ms"]["p50"] <= summary["failover_ms"]["max"]
    for event in lines[:-1]:
        assert event["event"] in ("elected", "revoked", "killed")
        assert event["group"] == "demo-test"
        assert isinstance(event["agent"], str) and isinstance(event["term"], int)
        assert event["t"] >= 0
    elected = [e["term"] for e in lines if e["event"] == "elected"]
    assert elected == sorted(set(elected))


def test_demo_in_memory_says_so_and_elects(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    options = DemoOptions(duration=7.0, kill_every=3.0, lease=1.0)
    summary = _run_in_memory(options, out, "no Java found")
    first_line = out.getvalue().splitlines()[0]
    assert first_line.startswith("backend memory: no Kafka broker could be started")
    assert summary["backend"] == "memory"
    assert summary["elections"] >= 2
    assert summary["overlaps"] == 0
    assert summary["terms_increasing"] is True


@pytest.mark.parametrize(
    ("option", "named"),
    [
        (["--agents", "0"], "--agents"),
        (["--lease", "nan"], "--lease"),
        (["--lease", "0.1"], "--lease"),
        (["--duration", "-5"], "--duration"),
        (["--kill-every", "0"], "--kill-every"),
    ],
)
def test_demo_refuses_settings_it_cannot_run_with(
    option: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nccoord.cli import main

    assert main(["demo", *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nccoord: {named}:"), err
    assert "\n" not in err
