"""A real Apache Kafka for the tests, the demo and users, started on demand.

:func:`start_broker` tries three ways to a broker, in this order:

1. ``NCCOORD_BOOTSTRAP`` names one that is already running; nothing starts.
2. A Docker engine answers: Testcontainers runs the ``apache/kafka`` image,
   its client port published on 127.0.0.1 only.
3. Otherwise Apache Kafka's own jars, fetched once from Maven Central with
   ``mvn`` into a cache outside the repository (``~/.cache/nccoord``, or
   ``NCCOORD_CACHE``), run as a child JVM in KRaft combined mode (broker and
   controller in one process) listening on 127.0.0.1.

:func:`start_cluster` runs three such JVMs with one cluster id and a
three-voter controller quorum; each node can be killed, paused, resumed and
restarted for fault tests.

A JVM started here dies with the process that started it (Linux parent-death
signal), so a crashed test run leaves no broker behind; it does leave its data
directory under the system's temp folder.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from .errors import BrokerError

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
DOCKER_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
HOST = "127.0.0.1"

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
FETCH_TIMEOUT = 600.0
FORMAT_TIMEOUT = 60.0

JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

Backend = Literal["external", "testcontainers", "jars"]
Progress = Callable[[str], None]


def _log_progress(message: str) -> None:
    logger.info("%s", message)


# --- the jars -------------------------------------------------------------

_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>nccoord.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# Kafka 4 logs through log4j2 (log4j-core is among its dependencies); the
# slf4j binding above routes the slf4j half of its logging to the same place.
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def cache_root() -> Path:
    """The folder for fetched jars and the CLI's state file."""
    configured = os.environ.get("NCCOORD_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "nccoord"


def ensure_jars(
    version: str = KAFKA_VERSION, *, progress: Progress | None = None
) -> Path:
    """Return the folder holding Kafka's jars, fetching them first if needed.

    The folder appears only once complete (fetched beside it, then renamed),
    and a lock file makes a second process wait for the first one's fetch.
    """
    home = cache_root() / f"kafka-{version}"
    libs = home / "libs"
    if _has_jars(libs, version):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with _file_lock(home / ".fetch.lock"):
        if _has_jars(libs, version):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                "Kafka's jars are not cached and Maven (mvn) is not on PATH: "
                "install maven, or set NCCOORD_BOOTSTRAP=host:port"
            )
        (progress or _log_progress)(
            f"fetching Kafka {version} jars from Maven Central…"
        )
        _fetch_jars(mvn, version, home, libs)
    return libs


def _has_jars(libs: Path, version: str) -> bool:
    return (libs / f"kafka_{SCALA_VERSION}-{version}.jar").is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_jars(mvn: str, version: str, home: Path, libs: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=home))
    try:
        pom = staging / "pom.xml"
        pom.write_text(
            _POM.format(scala=SCALA_VERSION, kafka=version, log4j=LOG4J_VERSION)
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
        result = _run(command, FETCH_TIMEOUT, "mvn dependency:copy-dependencies")
        if not _has_jars(fetched, version):
            raise BrokerError(
                f"mvn did not produce Kafka {version}'s jars:\n{result[-2000:]}"
            )
        fetched.rename(libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run(command: list[str], timeout: float, what: str) -> str:
    """Run a short-lived tool; return its output or raise with its last lines."""
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"{what} did not finish within {timeout:.0f} s") from exc
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise BrokerError(
            f"{what} failed with exit status {done.returncode}:\n{_last_lines(output)}"
        )
    return output


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    found = None
    if java_home:
        found = shutil.which("java", path=str(Path(java_home) / "bin"))
    found = found or shutil.which("java")
    if found is None:
        raise BrokerError(
            "no Java found to run Kafka: install a JDK 17 or newer "
            "(with maven), start Docker, or set NCCOORD_BOOTSTRAP=host:port"
        )
    return found


# --- small helpers --------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that were free a moment ago (held open together)."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]


def _check_port_free(port: int) -> None:
    """Raise a one-line BrokerError if ``port`` on loopback is in use."""
    with socket.socket() as sock:
        # As the JVM binds: connections of a stopped broker lingering in
        # TIME_WAIT do not make the port taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise BrokerError(
                f"port {port} on {HOST} is taken ({exc.strerror}): pass another "
                "--port, or leave it out for a free one"
            ) from exc


def new_cluster_id() -> str:
    """A random cluster id in Kafka's form: 16 bytes, URL-safe base64."""
    raw = base64.urlsafe_b64encode(uuid.uuid4().bytes)
    return raw.decode().rstrip("=")


def _last_lines(text: str, count: int = 25) -> str:
    return "\n".join(text.splitlines()[-count:])


def _tail(path: Path, count: int = 25) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64_000))
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return _last_lines(text, count)


def _process_state(pid: int | None) -> str | None:
    """The state letter from /proc (``T`` when stopped); None if unknown."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name before the state is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[1].split()[0]


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def _admin(bootstrap: str) -> AdminClient:
    # A logger of its own keeps librdkafka's complaints about a node that was
    # just killed off stderr.
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": logging.getLogger(__name__),
    }
    return AdminClient(config)


def _count_brokers(bootstrap: str, timeout: float) -> int:
    admin = _admin(bootstrap)
    metadata = admin.list_topics(timeout=timeout)
    return len(metadata.brokers)


def wait_until_ready(
    bootstrap: str,
    *,
    brokers: int = 1,
    timeout: float = READY_TIMEOUT,
    check: Callable[[], None] | None = None,
    log_path: Path | None = None,
) -> None:
    """Wait until ``bootstrap`` answers a metadata request naming ``brokers``.

    ``check`` runs on every attempt and raises when the process behind the
    address has died, so a crash is reported at once rather than at the end.
    """
    deadline = time.monotonic() + timeout
    addresses = bootstrap.split(",")
    last = "no connection yet"
    while True:
        if check is not None:
            check()
        # Port probes first: librdkafka logs every refused connection.
        if all(_accepts(address) for address in addresses):
            try:
                count = _count_brokers(bootstrap, timeout=2.0)
            except KafkaException as exc:
                last = str(exc)
            else:
                if count >= brokers:
                    return
                last = f"{count} of {brokers} brokers registered"
        if time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    where = f"; log {log_path}:\n{_tail(log_path)}" if log_path else ""
    raise BrokerError(
        f"Kafka at {bootstrap} not ready after {timeout:.0f} s ({last}){where}"
    )


# --- one JVM --------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_prctl: Any = None


def _death_signal_setter() -> Callable[[], None] | None:
    """Make a child receive SIGKILL when its parent thread exits (Linux).

    prctl is looked up here, in the parent: the child, running between fork
    and exec, must not load libraries.
    """
    global _prctl
    if not sys.platform.startswith("linux"):
        return None
    if _prctl is None:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_death_signal() -> None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))

    return set_death_signal


def _kraft_settings(
    node_id: int,
    client_port: int,
    controller_port: int,
    voters: str,
    log_dir: Path,
) -> dict[str, str]:
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "listeners": (
            f"PLAINTEXT://{HOST}:{client_port},CONTROLLER://{HOST}:{controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{HOST}:{client_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.voters": voters,
        "log.dirs": str(log_dir),
    }


def broker_settings(replication: int, min_isr: int) -> dict[str, str]:
    """The tuning every broker started here gets, whatever runs it.

    Internal topics keep Kafka's defaults except their replication (a single
    node cannot hold three copies) and a smaller partition count, which two
    cores create faster.
    """
    return {
        "num.partitions": "1",
        "default.replication.factor": str(replication),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replication),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        # Benchmarks run consumer groups with 2 s sessions; Kafka's floor is 6 s.
        "group.min.session.timeout.ms": "1000",
        # Bounds what a client may ask for; librdkafka's default is 60 s.
        "transaction.max.timeout.ms": "300000",
        "auto.create.topics.enable": "false",
        # Fence a killed broker within a few seconds rather than nine.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "4000",
    }


def _properties_text(settings: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class KafkaNode:
    """One Kafka JVM in KRaft combined mode: a broker and a controller.

    Its ports and data directory stay the same across :meth:`restart`, so a
    killed node comes back as the same member of its cluster.
    """

    def __init__(
        self,
        node_id: int,
        client_port: int,
        controller_port: int,
        data_dir: Path,
        *,
        voters: str,
        replication: int,
        min_isr: int,
        libs: Path,
        java: str,
    ) -> None:
        self.node_id = node_id
        self.client_port = client_port
        self.controller_port = controller_port
        self.data_dir = data_dir
        self._libs = libs
        self._java = java
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False
        settings = _kraft_settings(
            node_id, client_port, controller_port, voters, data_dir / "kafka-logs"
        )
        settings.update(broker_settings(replication, min_isr))
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_properties_text(settings))
        (data_dir / "log4j2.properties").write_text(_LOG4J2)

    def __repr__(self) -> str:
        return f"KafkaNode(id={self.node_id}, {self.bootstrap}, pid={self.pid})"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_path(self) -> Path:
        """The JVM's stdout and stderr; restarts append to it."""
        return self.data_dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def is_paused(self) -> bool:
        return self.is_running and self._paused

    @property
    def is_formatted(self) -> bool:
        return (self.data_dir / "kafka-logs" / "meta.properties").is_file()

    def _command(self, main_class: str, *args: str) -> list[str]:
        log_config = self.data_dir / "log4j2.properties"
        return [
            self._java,
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={log_config}",
            "-cp",
            str(self._libs / "*"),
            main_class,
            *args,
        ]

    def format_command(self, cluster_id: str) -> list[str]:
        return self._command(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_path),
        )

    def format(self, cluster_id: str) -> None:
        """Format the data directory for ``cluster_id`` (first start only)."""
        _run(self.format_command(cluster_id), FORMAT_TIMEOUT, "Kafka storage format")

    def start(self) -> None:
        """Spawn the JVM; returns at once (see :func:`wait_until_ready`).

        The JVM gets SIGKILL when the thread calling this exits (Linux's
        parent-death signal is per thread): start nodes from a thread that
        outlives them, such as the main thread.
        """
        if self.is_running:
            raise BrokerError(f"Kafka node {self.node_id} is already running")
        command = self._command("kafka.Kafka", str(self.config_path))
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=_death_signal_setter(),
            )
        self._paused = False
        logger.debug("kafka node %d started, pid %d", self.node_id, self.pid)

    def check_alive(self) -> None:
        """Raise :class:`BrokerError` with the log's last lines if it exited."""
        if self._process is None:
            raise BrokerError(f"Kafka node {self.node_id} was never started")
        status = self._process.poll()
        if status is not None:
            raise BrokerError(
                f"Kafka node {self.node_id} exited with status {status}; "
                f"log {self.log_path}:\n{_tail(self.log_path)}"
            )

    def wait_ready(self, brokers: int = 1, timeout: float = READY_TIMEOUT) -> None:
        wait_until_ready(
            self.bootstrap,
            brokers=brokers,
            timeout=timeout,
            check=self.check_alive,
            log_path=self.log_path,
        )

    def _signal(self, signum: signal.Signals) -> None:
        if not self.is_running:
            raise BrokerError(f"Kafka node {self.node_id} is not running")
        assert self._process is not None
        self._process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the node vanishes without a clean shutdown."""
        self._signal(signal.SIGKILL)
        assert self._process is not None
        self._process.wait(timeout=STOP_TIMEOUT)
        self._paused = False
        logger.info("kafka node %d killed", self.node_id)

    def pause(self) -> None:
        """SIGSTOP: the node freezes with its sockets open.

        Returns once the process is seen stopped (signals arrive a moment
        after they are sent).
        """
        self._signal(signal.SIGSTOP)
        self._paused = True
        self._await_state(stopped=True)
        logger.info("kafka node %d paused", self.node_id)

    def resume(self) -> None:
        """SIGCONT: a paused node carries on where it stopped."""
        self._signal(signal.SIGCONT)
        self._paused = False
        self._await_state(stopped=False)
        logger.info("kafka node %d resumed", self.node_id)

    def _await_state(self, *, stopped: bool, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = _process_state(self.pid)
            if state is None or (state == "T") == stopped:
                return
            time.sleep(0.01)
        raise BrokerError(
            f"Kafka node {self.node_id} did not {'stop' if stopped else 'continue'}"
            f" within {timeout:.0f} s of the signal"
        )

    def restart(self, brokers: int = 1, timeout: float = READY_TIMEOUT) -> None:
        """Start the node again on its ports and data, killing it first if up.

        Returns once the node answers and the cluster lists ``brokers``.
        """
        if self.is_running:
            self.kill()
        self.start()
        self.wait_ready(brokers=brokers, timeout=timeout)
        logger.info("kafka node %d restarted, pid %s", self.node_id, self.pid)

    def begin_stop(self) -> None:
        """SIGTERM (after SIGCONT if paused); :meth:`finish_stop` waits."""
        if not self.is_running:
            return
        assert self._process is not None
        if self._paused:
            self._process.send_signal(signal.SIGCONT)
            self._paused = False
        self._process.send_signal(signal.SIGTERM)

    def finish_stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for the exit; SIGKILL when it takes longer than ``timeout``."""
        if self._process is None:
            return
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "kafka node %d ignored SIGTERM for %.0f s; killing it",
                self.node_id,
                timeout,
            )
            self._process.kill()
            self._process.wait(timeout=STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop cleanly: SIGTERM, wait, then SIGKILL."""
        self.begin_stop()
        self.finish_stop(timeout)


# --- one broker -----------------------------------------------------------


class Broker:
    """A running broker and the means to stop it.

    ``backend`` says where it came from: ``"external"`` (``NCCOORD_BOOTSTRAP``;
    :meth:`stop` leaves it running), ``"testcontainers"`` or ``"jars"``.
    """

    def __init__(
        self,
        bootstrap: str,
        backend: Backend,
        *,
        node: KafkaNode | None = None,
        on_stop: Callable[[], None] | None = None,
        remove_dir: Path | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.backend: Backend = backend
        self.node = node
        self._on_stop = on_stop
        self._remove_dir = remove_dir
        self._stopped = False

    def __repr__(self) -> str:
        return f"Broker({self.bootstrap!r}, backend={self.backend!r})"

    @property
    def pid(self) -> int | None:
        """The JVM's process id (jars backend only)."""
        return self.node.pid if self.node else None

    @property
    def data_dir(self) -> Path | None:
        return self.node.data_dir if self.node else None

    @property
    def log_path(self) -> Path | None:
        return self.node.log_path if self.node else None

    @property
    def is_running(self) -> bool:
        if self.node is not None:
            return self.node.is_running
        return not self._stopped

    def stop(self) -> None:
        """Stop what was started and remove a temporary data directory."""
        if self._stopped:
            return
        self._stopped = True
        if self.node is not None:
            self.node.stop()
        if self._on_stop is not None:
            self._on_stop()
        if self._remove_dir is not None:
            shutil.rmtree(self._remove_dir, ignore_errors=True)
        logger.info("broker at %s stopped", self.bootstrap)

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_broker(
    *,
    port: int | None = None,
    data_dir: Path | str | None = None,
    backend: Backend | None = None,
    progress: Progress | None = None,
    timeout: float = READY_TIMEOUT,
) -> Broker:
    """Start (or find) one Kafka broker and return once it answers.

    With ``backend=None`` the first that applies wins: ``NCCOORD_BOOTSTRAP``,
    then Testcontainers where a Docker engine answers, then the jars.
    ``port`` fixes the client port (else a free one); ``data_dir`` keeps the
    jars broker's data there (else a temp directory removed on stop).
    """
    report = progress or _log_progress
    if backend is None:
        backend = _choose_backend()
    if backend == "external":
        return _external_broker(timeout)
    if backend == "testcontainers":
        return _start_container(port, report, timeout)
    return _start_jars(port, data_dir, report, timeout)


def _choose_backend() -> Backend:
    if os.environ.get("NCCOORD_BOOTSTRAP"):
        return "external"
    if _docker_answers():
        return "testcontainers"
    return "jars"


def _docker_answers() -> bool:
    """True when a Docker engine replies to a ping within two seconds."""
    try:
        docker: Any = importlib.import_module("docker")
        client = docker.from_env(timeout=2)
    except Exception as exc:  # no package, no socket, bad DOCKER_HOST
        logger.debug("no docker engine: %s", exc)
        return False
    try:
        return bool(client.ping())
    except Exception as exc:
        logger.debug("docker engine does not answer: %s", exc)
        return False
    finally:
        client.close()


def _external_broker(timeout: float) -> Broker:
    bootstrap = os.environ.get("NCCOORD_BOOTSTRAP", "")
    if not bootstrap:
        raise BrokerError("backend 'external' needs NCCOORD_BOOTSTRAP=host:port")
    wait_until_ready(bootstrap, timeout=timeout)
    logger.info("using the broker at %s (NCCOORD_BOOTSTRAP)", bootstrap)
    return Broker(bootstrap, "external")


def _start_jars(
    port: int | None,
    data_dir: Path | str | None,
    report: Progress,
    timeout: float,
) -> Broker:
    java = _java()
    if port is not None:
        _check_port_free(port)
    libs = ensure_jars(progress=report)
    # A port picked here can be taken before the JVM binds it: pick again.
    attempts = 1 if port is not None else 3
    for attempt in range(1, attempts + 1):
        try:
            return _start_jars_once(port, data_dir, libs, java, report, timeout)
        except BrokerError as exc:
            if attempt == attempts or "Address already in use" not in str(exc):
                raise
            logger.info("port taken before the broker bound it; retrying")
    raise AssertionError("unreachable")  # pragma: no cover


def _start_jars_once(
    port: int | None,
    data_dir: Path | str | None,
    libs: Path,
    java: str,
    report: Progress,
    timeout: float,
) -> Broker:
    owned = data_dir is None
    if data_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="nccoord-kafka-"))
    else:
        folder = Path(data_dir).expanduser().resolve()
    client_port, controller_port = free_ports(2)
    client_port = port or client_port
    node = KafkaNode(
        1,
        client_port,
        controller_port,
        folder,
        voters=f"1@{HOST}:{controller_port}",
        replication=1,
        min_isr=1,
        libs=libs,
        java=java,
    )
    try:
        if not node.is_formatted:
            node.format(new_cluster_id())
        report("starting broker…")
        node.start()
        node.wait_ready(timeout=timeout)
    except BaseException:
        node.stop()
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    report(f"broker ready at {node.bootstrap}")
    return Broker(
        node.bootstrap, "jars", node=node, remove_dir=folder if owned else None
    )


def _start_container(port: int | None, report: Progress, timeout: float) -> Broker:
    from testcontainers.core.container import DockerContainer

    port = port or free_ports(1)[0]
    container = DockerContainer(DOCKER_IMAGE)
    for key, value in _container_env(port).items():
        container.with_env(key, value)
    # Published on loopback only; the advertised address must match it.
    ports: dict[str, Any] = container.ports
    ports[f"{port}/tcp"] = (HOST, port)
    report(f"starting broker ({DOCKER_IMAGE})…")
    try:
        container.start()
        wait_until_ready(f"{HOST}:{port}", timeout=timeout)
    except BaseException as exc:
        logs = _container_logs(container)
        container.stop()
        if isinstance(exc, BrokerError):
            raise BrokerError(f"{exc}\ncontainer log:\n{logs}") from exc
        if isinstance(exc, Exception):
            raise BrokerError(f"{DOCKER_IMAGE} did not start: {exc}") from exc
        raise
    report(f"broker ready at {HOST}:{port}")
    return Broker(f"{HOST}:{port}", "testcontainers", on_stop=container.stop)


def _container_env(port: int) -> dict[str, str]:
    settings = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "listeners": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://localhost:9093",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.voters": "1@localhost:9093",
        "log.dirs": "/tmp/kraft-combined-logs",
    }
    settings.update(broker_settings(1, 1))
    env = {"KAFKA_" + k.upper().replace(".", "_"): v for k, v in settings.items()}
    env["CLUSTER_ID"] = new_cluster_id()
    env["KAFKA_HEAP_OPTS"] = "-Xms128m -Xmx512m"
    return env


def _container_logs(container: Any) -> str:
    try:
        out, err = container.get_logs()
        return _last_lines((out + err).decode(errors="replace"))
    except Exception:
        return "(no container log)"


# --- a cluster ------------------------------------------------------------


class Cluster:
    """Nodes sharing one cluster id and one controller quorum.

    ``nodes[i].node_id`` is ``i + 1``. Killed or paused nodes stay in the
    list; :meth:`KafkaNode.restart` brings one back.
    """

    def __init__(self, nodes: list[KafkaNode], root: Path, remove_root: bool) -> None:
        self.nodes = nodes
        self.root = root
        self._remove_root = remove_root
        self._stopped = False

    def __repr__(self) -> str:
        return f"Cluster({self.bootstrap!r})"

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def live_bootstrap(self) -> str:
        """The addresses of the nodes running and not paused."""
        live = [n for n in self.nodes if n.is_running and not n.is_paused]
        if not live:
            raise BrokerError("no Kafka node of the cluster is running")
        return ",".join(node.bootstrap for node in live)

    def index_of(self, node_id: int) -> int:
        for index, node in enumerate(self.nodes):
            if node.node_id == node_id:
                return index
        raise BrokerError(f"no node with id {node_id} in {self!r}")

    def leader_of(self, topic: str, partition: int = 0, timeout: float = 10.0) -> int:
        """The index in :attr:`nodes` of the partition's leader, per metadata.

        Asks the live nodes only. Right after a kill the answer may still name
        the dead node until the controller fences it (a few seconds).
        """
        admin = _admin(self.live_bootstrap())
        try:
            metadata = admin.list_topics(topic=topic, timeout=timeout)
        except KafkaException as exc:
            raise BrokerError(f"no metadata for {topic}: {exc}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            error = found.error if found is not None else "absent"
            raise BrokerError(f"topic {topic}: {error}")
        part = found.partitions.get(partition)
        if part is None or part.leader < 0:
            raise BrokerError(f"{topic}[{partition}] has no leader")
        return self.index_of(part.leader)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until every running node is registered with the quorum."""

        def check() -> None:
            for node in self.nodes:
                node.check_alive()

        wait_until_ready(
            self.bootstrap,
            brokers=len(self.nodes),
            timeout=timeout,
            check=check,
            log_path=self.nodes[0].log_path,
        )

    def stop(self) -> None:
        """Stop every node (all at once) and remove a temporary root."""
        if self._stopped:
            return
        self._stopped = True
        for node in self.nodes:
            node.begin_stop()
        for node in self.nodes:
            node.finish_stop()
        if self._remove_root:
            shutil.rmtree(self.root, ignore_errors=True)
        logger.info("cluster %s stopped", self.bootstrap)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_cluster(
    n: int = 3,
    *,
    data_dir: Path | str | None = None,
    progress: Progress | None = None,
    timeout: float = 90.0,
) -> Cluster:
    """Start ``n`` combined broker+controller nodes from the jars.

    Every node is a voter. Internal topics get replication ``min(n, 3)`` and
    min ISR one less (at least 1), as do topics created without settings.
    """
    if n < 1:
        raise BrokerError(f"a cluster needs at least one node, not {n}")
    report = progress or _log_progress
    java = _java()
    libs = ensure_jars(progress=report)
    owned = data_dir is None
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="nccoord-"))
    cluster = Cluster(_make_nodes(n, root, libs, java), root, remove_root=owned)
    try:
        _format_all(cluster.nodes, new_cluster_id())
        report(f"starting {n} brokers…")
        for node in cluster.nodes:
            node.start()
        cluster.wait_ready(timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    report(f"cluster ready at {cluster.bootstrap}")
    return cluster


def _make_nodes(n: int, root: Path, libs: Path, java: str) -> list[KafkaNode]:
    ports = free_ports(2 * n)
    client_ports, controller_ports = ports[:n], ports[n:]
    voters = ",".join(f"{i + 1}@{HOST}:{p}" for i, p in enumerate(controller_ports))
    replication = min(n, 3)
    return [
        KafkaNode(
            i + 1,
            client_ports[i],
            controller_ports[i],
            root / f"node-{i + 1}",
            voters=voters,
            replication=replication,
            min_isr=max(1, replication - 1),
            libs=libs,
            java=java,
        )
        for i in range(n)
    ]


def _format_all(nodes: list[KafkaNode], cluster_id: str) -> None:
    """Format every node's storage, the JVMs running side by side."""
    runs = [
        (
            node,
            subprocess.Popen(
                node.format_command(cluster_id),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            ),
        )
        for node in nodes
        if not node.is_formatted
    ]
    failures = []
    for node, run in runs:
        try:
            output, _ = run.communicate(timeout=FORMAT_TIMEOUT)
        except subprocess.TimeoutExpired:
            run.kill()
            output, _ = run.communicate()
        if run.returncode != 0:
            text = _last_lines(output.decode(errors="replace"), 10)
            failures.append(f"node {node.node_id}: {text}")
    if failures:
        raise BrokerError("Kafka storage format failed:\n" + "\n".join(failures))


# --- command line ---------------------------------------------------------


def _state_path() -> Path:
    return cache_root() / "broker.json"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``broker start`` and ``broker stop``."""
    parser = subparsers.add_parser("broker", help="run a local Kafka broker")
    commands = parser.add_subparsers(dest="broker_command", required=True)
    start = commands.add_parser(
        "start",
        help="start a broker and keep it up until SIGINT or SIGTERM",
        description="Start a local Kafka broker (Docker if it answers, else the "
        "jars), print its bootstrap address as the first line of stdout, and "
        "keep it up until interrupted or `nccoord broker stop`.",
    )
    start.add_argument("--port", type=int, help="client port (default: a free one)")
    start.add_argument(
        "--data-dir",
        type=Path,
        help="keep the broker's data here (default: a temp dir removed on stop)",
    )
    start.set_defaults(func=_cmd_start)
    stop = commands.add_parser("stop", help="stop the broker `broker start` runs")
    stop.set_defaults(func=_cmd_stop)


def _cmd_start(args: argparse.Namespace) -> int:
    running = _read_state()
    if running is not None and _pid_alive(int(running["pid"])):
        _stderr(
            f"nccoord: a broker is already running at {running['bootstrap']} "
            f"(pid {running['pid']}); stop it with `nccoord broker stop`"
        )
        return 1
    backend: Backend = "testcontainers" if _docker_answers() else "jars"
    # SIGTERM behaves like Ctrl-C, so both take the same clean way out.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        broker = start_broker(
            port=args.port, data_dir=args.data_dir, backend=backend, progress=_stderr
        )
        with broker:
            print(broker.bootstrap, flush=True)
            _write_state(broker)
            try:
                return _serve(broker)
            except KeyboardInterrupt:
                _stderr("stopping broker…")
                return 0
            finally:
                _remove_state()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(broker: Broker) -> int:
    """Sleep until interrupted; 1 if the broker dies meanwhile."""
    while broker.is_running:
        time.sleep(1.0)
    _stderr(f"nccoord: the broker exited; log: {broker.log_path}")
    return 1


def _write_state(broker: Broker) -> None:
    state = {
        "pid": os.getpid(),
        "broker_pid": broker.pid,
        "bootstrap": broker.bootstrap,
        "backend": broker.backend,
        "data_dir": str(broker.data_dir) if broker.data_dir else None,
    }
    path = _state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(state))
    staging.replace(path)


def _read_state() -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return None
    return state


def _remove_state() -> None:
    state = _read_state()
    if state is not None and state.get("pid") == os.getpid():
        _state_path().unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmd_stop(args: argparse.Namespace) -> int:
    state = _read_state()
    if state is None or not _pid_alive(int(state["pid"])):
        if state is not None:
            _state_path().unlink(missing_ok=True)
        _stderr("nccoord: no broker is running (started by `nccoord broker start`)")
        return 1
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT + 10
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        _stderr(f"nccoord: pid {pid} did not stop in time; killing it")
        for target in (state.get("broker_pid"), pid):
            if target and _pid_alive(int(target)):
                os.kill(int(target), signal.SIGKILL)
        _state_path().unlink(missing_ok=True)
    print(f"stopped broker at {state['bootstrap']}")
    return 0
