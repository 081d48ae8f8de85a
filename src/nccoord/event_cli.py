"""``nccoord validate``, ``nccoord emit`` and ``nccoord watch``.

``validate`` checks event files offline; ``emit`` publishes one event;
``watch`` tails the system topics. The broker comes from ``--bootstrap`` or
the ``NCCOORD_BOOTSTRAP`` environment variable.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from . import headers as hdr
from . import topics
from .connect import check_bootstrap
from .errors import ConfigError, EventError, TransportError
from .events import DEFAULT_MAX_BYTES, KINDS, Event, decode, infer_kind, resolve_kind

logger = logging.getLogger(__name__)

WATCHED = (
    topics.CONTROL,
    topics.HEARTBEAT,
    topics.STATUS,
    topics.BROADCAST,
    topics.OVERRIDE,
    topics.DEADLETTER,
)


def register(subparsers: Any) -> None:
    """Add the event subcommands to the ``nccoord`` parser."""
    _register_validate(subparsers)
    _register_emit(subparsers)
    _register_watch(subparsers)


def _add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("NCCOORD_BOOTSTRAP"),
        help="host:port of a broker (default: $NCCOORD_BOOTSTRAP)",
    )
    parser.add_argument("--prefix", default="", help="prefix of the topic names")


def _bootstrap(args: argparse.Namespace) -> str:
    if not args.bootstrap:
        raise ConfigError("no broker: pass --bootstrap or set NCCOORD_BOOTSTRAP")
    check_bootstrap(str(args.bootstrap))
    return str(args.bootstrap)


# -- validate ---------------------------------------------------------------


def _register_validate(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check event files (one JSON event body per file)",
        description="Exit 0 when every event is valid, 1 otherwise; each fault "
        "is printed as 'FILE: field: reason'.",
    )
    parser.add_argument("--kind", choices=sorted(KINDS), help="kind of every event")
    parser.add_argument("--avro", action="store_true", help="also check with Avro")
    parser.add_argument("--max-bytes", type=_positive_int, default=DEFAULT_MAX_BYTES)
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="a file, or - for stdin"
    )
    parser.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    faults = 0
    for name in args.files:
        try:
            event = _validate_one(name, args.kind, args.max_bytes, args.avro)
        except EventError as exc:
            faults += 1
            print(f"{name}: {exc}")
        else:
            print(f"{name}: ok {event.KIND} v{event.VERSION}")
    return 1 if faults else 0


def _validate_one(name: str, kind: str | None, max_bytes: int, avro: bool) -> Event:
    data = _read(name, max_bytes)
    cls = resolve_kind(kind) if kind else infer_kind(data)
    event = decode(cls, data, max_bytes=max_bytes)
    if avro:
        from .avro import validate_avro

        validate_avro(event)
    return event


def _read(name: str, max_bytes: int) -> bytes:
    try:
        if name == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with Path(name).open("rb") as file:
                data = file.read(max_bytes + 1)
    except OSError as exc:
        raise EventError(f"cannot read: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise EventError(f"over the limit of {max_bytes} bytes")
    return data


# -- emit -------------------------------------------------------------------


def _register_emit(subparsers: Any) -> None:
    parser = subparsers.add_parser("emit", help="publish one event")
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument(
        "--json",
        required=True,
        metavar="BODY",
        help="the event's JSON body (- for stdin)",
    )
    parser.add_argument("--chain-id", help="causal chain id (eventChainId)")
    parser.add_argument("--name", default="nccoord-cli", help="source name")
    parser.add_argument("--timeout", type=_positive_float, default=30.0)
    _add_broker_options(parser)
    parser.set_defaults(func=cmd_emit)


def cmd_emit(args: argparse.Namespace) -> int:
    from .bus import Publisher

    body = sys.stdin.buffer.read() if args.json == "-" else args.json.encode()
    try:
        event = decode(args.kind, body)
    except EventError as exc:
        print(f"--json: {exc}")
        return 1
    names = topics.TopicNames(args.prefix)
    bootstrap = _bootstrap(args)
    target = names.name(event.TOPIC)
    if topics.missing(bootstrap, [target]):
        raise ConfigError(
            f"topic {target} does not exist: create the system topics with "
            f"`nccoord topics create --bootstrap {bootstrap}"
            + (f" --prefix {args.prefix}`" if args.prefix else "`")
        )
    with Publisher(bootstrap, name=args.name, names=names) as publisher:
        meta = publisher.publish(event, args.chain_id, wait=True, timeout=args.timeout)
        topic, key = publisher.route(event)
    print(f"{topic} key={key} id={meta.id} type={meta.type} seq={meta.sequence}")
    return 0


# -- watch ------------------------------------------------------------------


def _register_watch(subparsers: Any) -> None:
    parser = subparsers.add_parser("watch", help="tail the system topics")
    parser.add_argument(
        "--topic",
        action="append",
        choices=topics.ALL,
        help="a system topic (repeatable; default: all but system-lease)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record"
    )
    parser.add_argument("--max-messages", type=int, help="stop after this many")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--live",
        action="store_true",
        help="redraw groups, agents, overrides and results in place "
        "(the default on a terminal)",
    )
    mode.add_argument(
        "--lines", action="store_true", help="one line per record, as it comes"
    )
    _add_broker_options(parser)
    parser.set_defaults(func=cmd_watch)


def _wants_live(args: argparse.Namespace) -> bool:
    if args.live:
        return True
    if args.lines or args.json or args.topic or args.max_messages is not None:
        return False
    return sys.stdout.isatty()


def cmd_watch(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, KafkaException

    if _wants_live(args):
        return _watch_live(args)
    names = topics.TopicNames(args.prefix)
    wanted = [names.name(base) for base in args.topic or WATCHED]
    consumer = Consumer(
        {
            "bootstrap.servers": _bootstrap(args),
            "group.id": f"nccoord-watch-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        }
    )
    deadline = None if args.duration is None else time.monotonic() + args.duration
    seen = 0
    try:
        consumer.subscribe(wanted)
        while args.max_messages is None or seen < args.max_messages:
            if deadline is not None and time.monotonic() >= deadline:
                break
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                logger.debug("consumer reports: %s", msg.error())
                continue
            seen += 1
            _show(msg, args.json, sys.stdout)
    except KafkaException as exc:
        raise TransportError(f"cannot read: {exc}") from exc
    finally:
        consumer.close()
    return 0


def _watch_live(args: argparse.Namespace) -> int:
    from .dashboard import require_extra

    require_extra("ui", "rich")
    from . import live
    from .monitor import ClusterFollower, FollowerSettings

    bootstrap = _bootstrap(args)
    settings = FollowerSettings(names=topics.TopicNames(args.prefix))
    with ClusterFollower(bootstrap, settings=settings) as follower:
        live.run(follower.snapshot, source=bootstrap, duration=args.duration)
    return 0


def _show(msg: Any, as_json: bool, out: TextIO) -> None:
    raw_headers = msg.headers() or []
    headers = {
        name: (value.decode(errors="replace") if isinstance(value, bytes) else value)
        for name, value in raw_headers
    }
    value: bytes = msg.value() or b""
    key = msg.key()
    record: dict[str, Any] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": key.decode(errors="replace") if isinstance(key, bytes) else key,
        "headers": headers,
        "event": None,
        "error": None,
    }
    try:
        hdr.decode_record(raw_headers, value)
        record["event"] = json.loads(value)
    except EventError as exc:
        record["error"] = str(exc)
    if as_json:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
    else:
        out.write(_line(record, value) + "\n")
    out.flush()


def _line(record: dict[str, Any], value: bytes) -> str:
    headers = record["headers"]
    where = f"{record['topic']}[{record['partition']}]@{record['offset']}"
    head = f"{headers.get(hdr.TIME, '-')} {where} {headers.get(hdr.TYPE, '-')}"
    head += f" key={record['key']}"
    if hdr.DLQ_REASON in headers:
        origin = f"{headers.get(hdr.DLQ_TOPIC)}[{headers.get(hdr.DLQ_PARTITION)}]"
        origin += f"@{headers.get(hdr.DLQ_OFFSET)}"
        head += f" dead-letter from {origin}: {headers[hdr.DLQ_REASON]}"
    elif record["error"] is not None:
        head += f" INVALID {record['error']}"
    body = value[:400].decode(errors="replace")
    return f"{head} {body}"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value
