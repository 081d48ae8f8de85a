"""Errors a user can fix end in one line that says what to do, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nccoord.connect import check_bootstrap, parse_bootstrap
from nccoord.errors import ConfigError, TransportError


def nccoord(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI in its own process; return exit status and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "nccoord.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stderr


def assert_one_line(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("nccoord: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_parse_bootstrap_names_the_fault() -> None:
    assert parse_bootstrap("a:1,[::1]:9092") == [("a", 1), ("::1", 9092)]
    for text, fault in [
        ("nohost:notaport", "port 'notaport' is not a number"),
        ("127.0.0.1", "expected HOST:PORT"),
        (":9092", "expected HOST:PORT"),
        ("h:70000", "from 1 to 65535"),
    ]:
        with pytest.raises(ConfigError, match=fault):
            parse_bootstrap(text)


def test_check_bootstrap_says_nobody_answers(closed_port: int) -> None:
    with pytest.raises(TransportError, match=f"127.0.0.1:{closed_port} .*refused"):
        check_bootstrap(f"127.0.0.1:{closed_port}", timeout=2)


@pytest.mark.parametrize("command", ["watch", "dashboard", "demo"])
def test_bad_bootstrap_address_is_one_line(command: str) -> None:
    status, err = nccoord(command, "--bootstrap", "nohost:notaport")
    assert status == 2
    assert_one_line(err, "bad bootstrap address 'nohost:notaport'", "port")


@pytest.mark.parametrize("command", ["watch", "dashboard", "demo"])
def test_unreachable_broker_is_one_line(command: str, closed_port: int) -> None:
    status, err = nccoord(command, "--bootstrap", f"127.0.0.1:{closed_port}")
    assert status == 2
    assert_one_line(err, "no Kafka broker answers", "nccoord broker start")


def test_emit_to_an_unreachable_broker_is_one_line(closed_port: int) -> None:
    body = '{"agentId": "a", "timestamp": "2025-07-26T00:10:00Z", "status": "ok"}'
    status, err = nccoord(
        "emit", "heartbeat", "--json", body, "--bootstrap", f"127.0.0.1:{closed_port}"
    )
    assert status == 2
    assert_one_line(err, f"127.0.0.1:{closed_port}")


def test_no_java_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "DOCKER_HOST")}
    env.update(PATH=str(tmp_path), NCCOORD_CACHE=str(tmp_path))
    env.pop("NCCOORD_BOOTSTRAP", None)
    status, err = nccoord("broker", "start", env=env)
    assert status == 2
    assert_one_line(err, "no Java found", "install a JDK 17")


def test_broker_port_taken_is_one_line(taken_port: int, tmp_path: Path) -> None:
    env = {**os.environ, "NCCOORD_CACHE": str(tmp_path)}
    status, err = nccoord("broker", "start", "--port", str(taken_port), env=env)
    assert status == 2
    assert_one_line(err, f"port {taken_port} on 127.0.0.1 is taken", "--port")


@pytest.mark.broker
def test_dashboard_port_taken_is_one_line(
    kafka_bootstrap: str, taken_port: int
) -> None:
    status, err = nccoord(
        "dashboard", "--bootstrap", kafka_bootstrap, "--port", str(taken_port)
    )
    assert status == 2
    assert_one_line(err, f"port {taken_port} on 127.0.0.1 is taken", "--port 0")
