"""The dashboard end to end: real broker, agent processes, headless Chromium.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it), driven
by Playwright for Python through ``executable_path``; no browser is
downloaded. Under CI a missing browser fails the test; on a developer's
machine without one it is skipped with the command that installs it, unless
``NCCOORD_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nccoord.bus import Publisher
from nccoord.events import Broadcast, Override, OverrideSpec
from nccoord.topics import TopicNames

from .agents import AgentProcesses

pytestmark = pytest.mark.broker

DOCS = Path(__file__).resolve().parent.parent / "docs"
INSTALL = "apt-get install -y chromium && pip install -e '.[ui]'"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        message = f"headless Chromium with Playwright is needed: {INSTALL}"
        if os.environ.get("CI") or os.environ.get("NCCOORD_REQUIRE_BROWSER"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def dashboard(kafka_bootstrap: str, topics: TopicNames) -> Iterator[str]:
    """``nccoord dashboard`` as its own process; yields its URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nccoord.cli",
            "dashboard",
            "--bootstrap",
            kafka_bootstrap,
            "--prefix",
            topics.prefix,
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield _first_line(process, timeout=30)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(
        target=lambda: lines.append(process.stdout.readline()),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0].startswith("http://127.0.0.1:"):
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"dashboard did not start: {lines} {err[-2000:]}")
    return lines[0].strip()


def _leader_shown(page: Any, group: str) -> str:
    cell = page.locator(f'tr[data-group="{group}"] td:nth-child(2)')
    if cell.count() == 0:
        return ""
    return str(cell.inner_text()).strip()


def _wait_shown(page: Any, group: str, wanted: str, timeout: float) -> float:
    """Seconds until the page shows ``wanted`` as leader; fails after timeout."""
    start = time.monotonic()
    shown = ""
    while time.monotonic() - start < timeout:
        shown = _leader_shown(page, group)
        if shown == wanted:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"page shows leader {shown!r}, not {wanted!r}")


def _publish_override_and_result(
    bootstrap: str, topics: TopicNames, group: str
) -> None:
    now = datetime.now(UTC)
    with Publisher(bootstrap, name="operator", names=topics) as publisher:
        publisher.publish(
            Override(
                target="strategy-alpha",
                timestamp=now,
                override=OverrideSpec(
                    type="threshold-adjustment", new_value=0.85, duration_seconds=600
                ),
                override_id="ov-1",
            ),
            wait=True,
        )
        publisher.publish(
            Broadcast(
                kind="consensus-result",
                timestamp=now,
                group=group,
                round=1,
                term=1,
                value="blue",
                voters=["web-1", "web-2"],
            ),
            wait=True,
        )


def test_page_follows_the_leader_across_a_kill(
    kafka_bootstrap: str,
    topics: TopicNames,
    agents: AgentProcesses,
    group: str,
    dashboard: str,
    tmp_path: Path,
) -> None:
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    for name in ("web-1", "web-2", "web-3"):
        agents.start(name, 2.0, "--heartbeat-every", "1")
    _publish_override_and_result(kafka_bootstrap, topics, group)
    leader, _ = agents.wait_for("elected", timeout=30)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(dashboard)
            _wait_shown(page, group, leader, timeout=15)
            page.wait_for_function(
                "document.querySelectorAll('#agents tbody td.alive').length >= 3",
                timeout=15_000,
            )
            overrides = page.inner_text("#overrides")
            assert "strategy-alpha" in overrides and "0.85" in overrides
            assert '"blue"' in page.inner_text("#results")
            page.screenshot(path=str(tmp_path / "leader.png"), full_page=True)

            agents.signal(leader, signal.SIGKILL)
            killed_at = time.monotonic()
            successor, elected = agents.wait_for("elected", timeout=15)
            assert successor != leader
            lag = _wait_shown(page, group, successor, timeout=10)
            shown_after_kill = time.monotonic() - killed_at
            # The page learns of the new term from the log and the stream
            # within a second or so of the successor itself.
            assert time.monotonic() - elected["mono"] < 5.0, f"page lag {lag:.2f}s"
            assert shown_after_kill < 15.0
            text = page.inner_text("#changes")
            assert "elected" in text and successor in text
            page.screenshot(path=str(tmp_path / "failover.png"), full_page=True)
            if os.environ.get("NCCOORD_DOCS_SCREENSHOT"):
                shutil.copy(tmp_path / "failover.png", DOCS / "dashboard.png")
        finally:
            browser.close()
