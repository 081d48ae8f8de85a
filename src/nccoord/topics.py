"""Topic names and the settings nccoord creates them with."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

CONTROL = "system-control"
HEARTBEAT = "system-heartbeat"
STATUS = "system-status"
BROADCAST = "system-broadcast"
OVERRIDE = "system-override"
LEASE = "system-lease"
DEADLETTER = "system-deadletter"

ALL = (CONTROL, HEARTBEAT, STATUS, BROADCAST, OVERRIDE, LEASE, DEADLETTER)


@dataclass(frozen=True)
class TopicNames:
    """The seven topic names, each with an optional common prefix."""

    prefix: str = ""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def control(self) -> str:
        return self.name(CONTROL)

    @property
    def heartbeat(self) -> str:
        return self.name(HEARTBEAT)

    @property
    def status(self) -> str:
        return self.name(STATUS)

    @property
    def broadcast(self) -> str:
        return self.name(BROADCAST)

    @property
    def override(self) -> str:
        return self.name(OVERRIDE)

    @property
    def lease(self) -> str:
        return self.name(LEASE)

    @property
    def deadletter(self) -> str:
        return self.name(DEADLETTER)

    def all(self) -> list[str]:
        return [self.name(base) for base in ALL]


@dataclass(frozen=True)
class TopicSettings:
    """How many partitions each topic gets and how long it keeps records."""

    partitions: int = 3
    retention_ms: int = 7 * 24 * 3600 * 1000
    heartbeat_retention_ms: int = 3600 * 1000


def topic_configs(base: str, brokers: int, settings: TopicSettings) -> dict[str, str]:
    """The topic-level settings for one of the system topics.

    Every topic is delete-only (never compacted): the lease log's order is the
    protocol, and the event topics are streams, not tables.
    """
    retention = (
        settings.heartbeat_retention_ms if base == HEARTBEAT else settings.retention_ms
    )
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(retention),
        "unclean.leader.election.enable": "false",
        "min.insync.replicas": str(min_insync_replicas(brokers)),
    }


def replication_factor(brokers: int) -> int:
    """Three copies where the cluster has three brokers, else one per broker."""
    return max(1, min(3, brokers))


def min_insync_replicas(brokers: int) -> int:
    """Two of three replicas must hold a write; a smaller cluster takes one."""
    return 2 if replication_factor(brokers) >= 3 else 1


def ensure_topics(
    admin: object,
    names: TopicNames | None = None,
    settings: TopicSettings | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the system topics that do not exist yet; return those created.

    ``admin`` is a ``confluent_kafka.admin.AdminClient``. Topics that already
    exist are left as they are (their settings are not changed).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from .errors import TransportError

    assert isinstance(admin, AdminClient)
    names = names or TopicNames()
    settings = settings or TopicSettings()
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TransportError(f"cannot list topics: {exc}") from exc
    brokers = len(metadata.brokers)
    wanted = [
        NewTopic(
            names.name(base),
            num_partitions=settings.partitions,
            replication_factor=replication_factor(brokers),
            config=topic_configs(base, brokers, settings),
        )
        for base in ALL
        if names.name(base) not in metadata.topics
    ]
    if not wanted:
        return []
    created = []
    for topic, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TransportError(f"cannot create topic {topic}: {exc}") from exc
    logger.info("created topics %s (brokers=%d)", created, brokers)
    _wait_for_leaders(admin, created, timeout)
    return created


def _wait_for_leaders(admin: Any, topics: list[str], timeout: float) -> None:
    """Return once every partition of ``topics`` has a leader.

    A topic just created answers "not leader for partition" for a moment;
    waiting here spares every first reader that error.
    """
    from .errors import TransportError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=timeout)
        if all(
            name in metadata.topics
            and metadata.topics[name].partitions
            and all(p.leader >= 0 for p in metadata.topics[name].partitions.values())
            for name in topics
        ):
            return
        time.sleep(0.1)
    raise TransportError(f"topics {topics} have no partition leaders after {timeout}s")


def missing(bootstrap: str, wanted: list[str], timeout: float = 10.0) -> list[str]:
    """Which of ``wanted`` topics the cluster does not have."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from .errors import TransportError

    try:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(
            timeout=timeout
        )
    except KafkaException as exc:
        raise TransportError(f"cannot list the topics of {bootstrap}: {exc}") from exc
    return [name for name in wanted if name not in metadata.topics]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("topics", help="create the system topics")
    commands = parser.add_subparsers(dest="topics_command", required=True)
    create = commands.add_parser(
        "create",
        help="create the system topics that are missing, with safe settings",
    )
    create.add_argument("--bootstrap", default=os.environ.get("NCCOORD_BOOTSTRAP"))
    create.add_argument("--prefix", default="", help="topic name prefix")
    create.add_argument("--partitions", type=int, default=TopicSettings.partitions)
    create.set_defaults(func=_create_command)


def _create_command(args: Any) -> int:
    from confluent_kafka.admin import AdminClient

    from .connect import check_bootstrap
    from .errors import ConfigError

    if not args.bootstrap:
        raise ConfigError("no broker: pass --bootstrap or set NCCOORD_BOOTSTRAP")
    if args.partitions < 1:
        raise ConfigError("--partitions: must be at least 1")
    check_bootstrap(args.bootstrap)
    names = TopicNames(args.prefix)
    created = ensure_topics(
        AdminClient({"bootstrap.servers": args.bootstrap}),
        names,
        TopicSettings(partitions=args.partitions),
    )
    for name in names.all():
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0
