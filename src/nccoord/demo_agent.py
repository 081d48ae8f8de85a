"""One demo agent: an elector in its own OS process, reporting on stdout.

Started by ``nccoord demo``; it prints one JSON object per line (``ready``,
``elected``, ``revoked``, and ``renewed`` if asked) stamped with the
system-wide monotonic clock, so the demo can line up the reports of every
agent. It exits when its standard
input closes (the demo ended) or when it is killed (the demo's point).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .bus import Publisher
from .candidate import Timing
from .elector import Elector
from .errors import FencedError, NccoordError
from .events import Broadcast, Heartbeat, StatusUpdate, encode
from .fencing import FencedProducer, NotLeaderError
from .headers import new_meta, to_headers
from .lease import LeaseRecord, Renew
from .roles import RolePublisher

logger = logging.getLogger(__name__)

_print_lock = threading.Lock()


def report(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "mono": time.monotonic(), **fields})
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nccoord.demo_agent")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--prefix", default="")
    parser.add_argument(
        "--write-every",
        type=float,
        default=0.0,
        help="as leader, write a fenced record to system-broadcast this often",
    )
    parser.add_argument(
        "--broker-fence-only",
        action="store_true",
        help="keep writing after the local deadline, leaving the broker to refuse",
    )
    parser.add_argument(
        "--heartbeat-every",
        type=float,
        default=0.0,
        help="register on system-status, then send a heartbeat this often",
    )
    parser.add_argument(
        "--report-renewals",
        action="store_true",
        help="report each acknowledged Renew with its latency",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from .topics import TopicNames

    topics = TopicNames(args.prefix)
    publisher = Publisher(args.bootstrap, name=args.name, names=topics)
    elector = Elector.over_kafka(
        args.bootstrap,
        args.group,
        args.name,
        topics=topics,
        timing=Timing(lease=args.lease),
        role_changes=RolePublisher(publisher),
    )
    elector.on_elected(lambda term: report("elected", term=term))
    elector.on_revoked(lambda term, why: report("revoked", term=term, reason=why))
    if args.report_renewals:
        elector.on_sent(_report_renewal)
    elector.start()
    report("ready")
    stop = threading.Event()
    if args.heartbeat_every > 0:
        threading.Thread(
            target=_heartbeats,
            args=(publisher, args.name, args.group, args.heartbeat_every, stop),
            daemon=True,
        ).start()
    if args.write_every > 0:
        writer = FencedProducer(
            elector,
            args.bootstrap,
            transactional_id_prefix=args.prefix,
            check_deadline=not args.broker_fence_only,
        )
        threading.Thread(
            target=_write_as_leader,
            args=(writer, topics.broadcast, args.name, args.write_every, stop),
            daemon=True,
        ).start()
    sys.stdin.read()  # until the demo closes our input
    stop.set()
    elector.close()
    publisher.close()
    return 0


def _report_renewal(
    record: LeaseRecord, seconds: float, error: Exception | None
) -> None:
    if error is None and isinstance(record, Renew):
        report("renewed", seconds=seconds)


def _heartbeats(
    publisher: Publisher, name: str, group: str, every: float, stop: threading.Event
) -> None:
    """Register with the group, then send a heartbeat every ``every`` seconds."""
    now = datetime.now(UTC)
    publisher.publish(
        StatusUpdate(agent_id=name, timestamp=now, kind="registration", group=group)
    )
    while True:
        beat = Heartbeat(
            agent_id=name,
            timestamp=datetime.now(UTC),
            status="healthy",
            interval_seconds=every,
        )
        try:
            publisher.publish(beat)
        except NccoordError as exc:
            logger.warning("heartbeat not sent: %s", exc)
        if stop.wait(every):
            return


def _write_as_leader(
    writer: FencedProducer, topic: str, name: str, every: float, stop: threading.Event
) -> None:
    """Write numbered announcements while leading; report each outcome."""
    source = f"/nccoord/{name}/{uuid.uuid4().hex[:12]}"
    count = 0
    while not stop.wait(every):
        count += 1
        event = Broadcast(
            kind="announcement",
            timestamp=datetime.now(UTC),
            agent_id=name,
            group=writer.elector.group,
            message=str(count),
        )
        meta = new_meta(event, id=uuid.uuid4().hex, source=source, sequence=count)
        try:
            # Keyed by group: one partition holds the leaders' writes in order.
            term = writer.send(
                topic,
                [(writer.elector.group.encode(), encode(event))],
                {key: _as_bytes(value) for key, value in to_headers(meta)},
            )
        except NotLeaderError:
            continue
        except FencedError as exc:
            report("refused", n=count, reason=str(exc))
            continue
        except NccoordError as exc:
            report("failed", n=count, reason=str(exc))
            continue
        report("wrote", n=count, term=term)


def _as_bytes(value: bytes | str | None) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return value or b""


if __name__ == "__main__":
    sys.exit(main())
