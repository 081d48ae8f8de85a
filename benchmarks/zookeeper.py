"""A standalone Apache ZooKeeper on 127.0.0.1, for the peer benchmarks.

ZooKeeper's jars come from Maven Central through ``mvn`` into the same cache
as Kafka's (``~/.cache/nccoord`` or ``NCCOORD_CACHE``), with the helpers of
:mod:`nccoord.broker`. The server runs as a child JVM that dies with the
thread that started it, on a free loopback port, with its data in a
temporary folder removed on :meth:`ZooKeeper.stop`.

``tickTime`` is 200 ms and ``minSessionTimeout`` 1 s, so that a 2 s session
(the smallest detection budget benchmarked) is accepted and expires within
one short tick of its timeout; ZooKeeper's defaults (2 s ticks, sessions of
at least 4 s) would refuse it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from nccoord import broker
from nccoord.errors import BrokerError

ZOOKEEPER_VERSION = "3.9.4"
SLF4J_VERSION = "2.0.13"
# The server needs Dropwizard metrics and snappy, which its pom marks "provided".
METRICS_VERSION = "4.1.12.1"
SNAPPY_VERSION = "1.1.10.5"
TICK_MS = 200
READY_TIMEOUT = 60.0

_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>nccoord.local</groupId>
  <artifactId>zookeeper-runtime</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.zookeeper</groupId>
      <artifactId>zookeeper</artifactId>
      <version>{zookeeper}</version>
    </dependency>
    <dependency>
      <groupId>io.dropwizard.metrics</groupId>
      <artifactId>metrics-core</artifactId>
      <version>{metrics}</version>
    </dependency>
    <dependency>
      <groupId>org.xerial.snappy</groupId>
      <artifactId>snappy-java</artifactId>
      <version>{snappy}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def ensure_jars(version: str = ZOOKEEPER_VERSION) -> Path:
    """The folder of ZooKeeper's jars, fetched from Maven Central if missing."""
    home = broker.cache_root() / f"zookeeper-{version}"
    libs = home / "libs"
    if _has_jars(libs, version):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with broker._file_lock(home / ".fetch.lock"):
        if _has_jars(libs, version):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("ZooKeeper's jars are not cached and mvn is not on PATH")
        staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=home))
        try:
            pom = staging / "pom.xml"
            pom.write_text(
                _POM.format(
                    zookeeper=version,
                    metrics=METRICS_VERSION,
                    snappy=SNAPPY_VERSION,
                    slf4j=SLF4J_VERSION,
                )
            )
            fetched = staging / "libs"
            command = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={fetched}",
                "-DincludeScope=runtime",
            ]
            broker._run(command, broker.FETCH_TIMEOUT, "mvn (ZooKeeper jars)")
            if not _has_jars(fetched, version):
                raise BrokerError(f"mvn did not produce ZooKeeper {version}'s jars")
            fetched.rename(libs)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return libs


def _has_jars(libs: Path, version: str) -> bool:
    names = (
        f"zookeeper-{version}.jar",
        f"metrics-core-{METRICS_VERSION}.jar",
        f"snappy-java-{SNAPPY_VERSION}.jar",
    )
    return all((libs / name).is_file() for name in names)


class ZooKeeper:
    """One running standalone server; :attr:`hosts` is its address."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, root: Path):
        self.process = process
        self.port = port
        self.root = root
        self.hosts = f"{broker.HOST}:{port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def four_letter(self, word: str, timeout: float = 2.0) -> str:
        """Send a four-letter command (``ruok``, ``mntr``) and return the reply."""
        with socket.create_connection((broker.HOST, self.port), timeout) as sock:
            sock.sendall(word.encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        shutil.rmtree(self.root, ignore_errors=True)


def start_zookeeper() -> ZooKeeper:
    """Start a standalone ZooKeeper on a free loopback port; wait until ready."""
    libs = ensure_jars()
    root = Path(tempfile.mkdtemp(prefix="nccoord-zk-"))
    port = broker.free_ports(1)[0]
    config = root / "zoo.cfg"
    config.write_text(
        f"tickTime={TICK_MS}\n"
        "minSessionTimeout=1000\n"
        "maxSessionTimeout=60000\n"
        f"dataDir={root / 'data'}\n"
        f"clientPort={port}\n"
        f"clientPortAddress={broker.HOST}\n"
        "admin.enableServer=false\n"
        "4lw.commands.whitelist=ruok,mntr,srvr\n"
        "maxClientCnxns=0\n"
    )
    command = [
        broker._java(),
        "-Xms64m",
        "-Xmx256m",
        "-cp",
        str(libs / "*"),
        "org.apache.zookeeper.server.ZooKeeperServerMain",
        str(config),
    ]
    with (root / "server.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
            preexec_fn=broker._death_signal_setter(),
        )
    server = ZooKeeper(process, port, root)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: ZooKeeper) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = (server.root / "server.log").read_text(errors="replace")
            raise BrokerError(f"ZooKeeper exited:\n{log[-2000:]}")
        try:
            # "ruok" answers before the server runs; "srvr" only after.
            if "Mode:" in server.four_letter("srvr", 1.0):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise BrokerError(f"ZooKeeper at {server.hosts} not ready in {READY_TIMEOUT} s")
