"""System events: one msgspec Struct per kind, plain JSON on the wire.

There are six kinds, each with its own topic (DESIGN.md section 1) and a
schema version:

=================  ================  =====================  ========
kind               Struct            topic                  key
=================  ================  =====================  ========
heartbeat          Heartbeat         system-heartbeat       agentId
control            ControlSignal     system-control         target, else group
override           Override          system-override        target
override-revoke    OverrideRevoke    system-override        target
status             StatusUpdate      system-status          agentId
broadcast          Broadcast         system-broadcast       group (or none)
=================  ================  =====================  ========

The body of a record is the JSON of the Struct alone, with camelCase names;
the kind and its version travel in the ``ce_type`` header
(``nccoord.heartbeat.v1``, see :mod:`nccoord.headers`).

Rules a reader follows:

- a version ``vN`` or ``vN.M`` whose major ``N`` it knows is accepted, and
  fields it does not know are ignored (a minor version only adds optional
  fields); an unknown major version or kind is an error;
- timestamps are RFC 3339 with a zone (``Z`` or an offset); a naive time is
  an error;
- durations, terms, rounds are non-negative and bounded;
- every fault is raised as :class:`~nccoord.errors.EventError` whose
  ``field`` is the dotted camelCase path of the offending field.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Literal, TypeVar, overload

import msgspec

from . import topics
from .errors import EventError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 512 * 1024
"""Largest body accepted by default; well under Kafka's default 1 MB record."""

MAX_COUNT = 2**63 - 1
MAX_DURATION_SECONDS = 10 * 366 * 24 * 3600

Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
Seconds = (
    Annotated[int, msgspec.Meta(ge=0, le=MAX_DURATION_SECONDS)]
    | Annotated[float, msgspec.Meta(ge=0, le=MAX_DURATION_SECONDS)]
)
Scalar = bool | int | float | str | None
"""A JSON scalar: the type of override values and consensus values."""


class Event(
    msgspec.Struct, rename="camel", omit_defaults=True, frozen=True, kw_only=True
):
    """Base of every event kind; carries the kind's name, version and topic."""

    KIND: ClassVar[str]
    VERSION: ClassVar[int]
    TOPIC: ClassVar[str]

    def key(self) -> str | None:
        """The record key: events with one key stay in order on one partition."""
        raise NotImplementedError


class Heartbeat(Event, frozen=True):
    """A keepalive pulse from an agent or service."""

    KIND: ClassVar[str] = "heartbeat"
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str] = topics.HEARTBEAT

    agent_id: Name
    timestamp: Timestamp
    status: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    interval_seconds: Seconds | None = None

    def key(self) -> str:
        return self.agent_id


Signal = Literal[
    "start",
    "stop",
    "reboot",
    "failover",
    "elected",
    "revoked",
    "resigned",
    "expired",
]
ROLE_SIGNALS = frozenset({"elected", "revoked", "resigned", "expired"})


class ControlSignal(Event, frozen=True):
    """A command to an agent or group, or a role change of an election group.

    Commands (``start``, ``stop``, ``reboot``, ``failover``) name a ``target``
    agent or a ``group``. Role changes (``elected``, ``revoked``, ``resigned``,
    ``expired``) name the ``group``, the ``agentId`` whose role changed and the
    ``term``.
    """

    KIND: ClassVar[str] = "control"
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str] = topics.CONTROL

    signal: Signal
    timestamp: Timestamp
    target: Name | None = None
    group: Name | None = None
    agent_id: Name | None = None
    term: Count | None = None
    reason: Text | None = None
    params: dict[str, Text] | None = None

    def __post_init__(self) -> None:
        if self.target is None and self.group is None:
            raise EventError("a control signal needs a target or a group", "target")
        if self.signal in ROLE_SIGNALS:
            for name, value in (
                ("group", self.group),
                ("agentId", self.agent_id),
                ("term", self.term),
            ):
                if value is None:
                    raise EventError(f"required for signal {self.signal!r}", name)

    def key(self) -> str:
        key = self.target if self.target is not None else self.group
        assert key is not None
        return key


class OverrideSpec(
    msgspec.Struct, rename="camel", omit_defaults=True, frozen=True, kw_only=True
):
    """What an override changes and for how long."""

    type: Name
    new_value: Scalar = None
    duration_seconds: Seconds


class Override(Event, frozen=True):
    """A time-bound adjustment for a target, from ``timestamp`` on.

    It applies for ``override.durationSeconds`` and ends on expiry or on an
    :class:`OverrideRevoke` naming it. ``overrideId`` names it for a revoke;
    without one, the event id (``ce_id``) does. ``signature`` and ``keyId``
    carry an optional signature of the issuer.
    """

    KIND: ClassVar[str] = "override"
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str] = topics.OVERRIDE

    target: Name
    timestamp: Timestamp
    override: OverrideSpec
    override_id: Name | None = None
    issued_by: Name | None = None
    key_id: Name | None = None
    signature: Text | None = None

    def key(self) -> str:
        return self.target

    @property
    def expires_at(self) -> datetime:
        """The moment the override ends unless revoked earlier."""
        return self.timestamp + timedelta(seconds=self.override.duration_seconds)


class OverrideRevoke(Event, frozen=True):
    """Ends an override early; it names the override by its id."""

    KIND: ClassVar[str] = "override-revoke"
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str] = topics.OVERRIDE

    target: Name
    timestamp: Timestamp
    override_id: Name
    reason: Text | None = None
    issued_by: Name | None = None
    key_id: Name | None = None
    signature: Text | None = None

    def key(self) -> str:
        return self.target


StatusKind = Literal["registration", "health", "plugin", "env-sync", "proposal"]


class StatusUpdate(Event, frozen=True):
    """What an agent reports about itself.

    ``kind`` says which fields matter: ``registration`` (optional
    ``capabilities``), ``health`` (``status``), ``plugin`` (``plugin`` and
    ``success``, optional ``error``), ``env-sync`` (``env``) and ``proposal``
    for a consensus round (``group``, ``round``, ``value``).
    """

    KIND: ClassVar[str] = "status"
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str] = topics.STATUS

    agent_id: Name
    timestamp: Timestamp
    kind: StatusKind
    status: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    capabilities: list[Name] | None = None
    plugin: Name | None = None
    success: bool | None = None
    error: Text | None = None
    env: dict[str, Text] | None = None
    group: Name | None = None
    round: Count | None = None
    value: Scalar = None
    detail: Text | None = None

    _REQUIRED: ClassVar[dict[str, tuple[str, ...]]] = {
        "registration": (),
        "health": ("status",),
        "plugin": ("plugin", "success"),
        "env-sync": ("env",),
        "proposal": ("group", "round", "value"),
    }

    def __post_init__(self) -> None:
        _require(self, self._REQUIRED[self.kind], self.kind)

    def key(self) -> str:
        return self.agent_id


BroadcastKind = Literal["announcement", "consensus-result"]


class Broadcast(Event, frozen=True):
    """A system-wide announcement, or the decided value of a consensus round.

    A ``consensus-result`` names ``group``, ``round``, ``term`` (the leader's
    fencing token), ``value`` and ``voters``; an ``announcement`` carries a
    ``message``.
    """

    KIND: ClassVar[str] = "broadcast"
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str] = topics.BROADCAST

    kind: BroadcastKind
    timestamp: Timestamp
    agent_id: Name | None = None
    message: Text | None = None
    group: Name | None = None
    round: Count | None = None
    term: Count | None = None
    value: Scalar = None
    voters: list[Name] | None = None

    _REQUIRED: ClassVar[dict[str, tuple[str, ...]]] = {
        "announcement": ("message",),
        "consensus-result": ("group", "round", "term", "value", "voters"),
    }

    def __post_init__(self) -> None:
        _require(self, self._REQUIRED[self.kind], self.kind)

    def key(self) -> str | None:
        return self.group


def _require(event: Event, fields: tuple[str, ...], kind: str) -> None:
    for name in fields:
        if getattr(event, name) is None:
            raise EventError(f"required when kind is {kind!r}", _camel(name))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


KINDS: dict[str, type[Event]] = {
    cls.KIND: cls
    for cls in (
        Heartbeat,
        ControlSignal,
        Override,
        OverrideRevoke,
        StatusUpdate,
        Broadcast,
    )
}
"""Every event kind by its name."""

E = TypeVar("E", bound=Event)

_encoder = msgspec.json.Encoder()
_decoders: dict[type[Event], msgspec.json.Decoder[Event]] = {
    cls: msgspec.json.Decoder(cls) for cls in KINDS.values()
}
_TYPE_RE = re.compile(r"nccoord\.([a-z][a-z-]*)\.v(\d{1,9})(?:\.(\d{1,9}))?")
_AT_RE = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING_RE = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


def kind_of(event: Event | type[Event]) -> type[Event]:
    """The event's kind (its Struct class)."""
    return event if isinstance(event, type) else type(event)


def resolve_kind(kind: str | type[E]) -> type[E] | type[Event]:
    """The Struct of a kind given by name or class; unknown names are errors."""
    if isinstance(kind, type):
        if kind not in _decoders:
            raise EventError(f"unknown event kind {kind.__name__}", "kind")
        return kind
    try:
        return KINDS[kind]
    except KeyError:
        known = ", ".join(KINDS)
        raise EventError(
            f"unknown event kind {kind!r} (known: {known})", "kind"
        ) from None


def type_name(kind: Event | type[Event]) -> str:
    """The CloudEvents ``type`` of a kind: ``nccoord.<kind>.v<major>``."""
    cls = kind_of(kind)
    return f"nccoord.{cls.KIND}.v{cls.VERSION}"


def parse_type(value: str) -> type[Event]:
    """The kind named by a CloudEvents ``type``; an unknown major is an error."""
    match = _TYPE_RE.fullmatch(value)
    if match is None:
        raise EventError(
            f"{value!r} is not an nccoord event type (nccoord.<kind>.v<N>)", "ce_type"
        )
    cls = KINDS.get(match[1])
    if cls is None:
        raise EventError(f"unknown event kind {match[1]!r}", "ce_type")
    major = int(match[2])
    if major != cls.VERSION:
        raise EventError(
            f"unknown major version v{major} of {cls.KIND} "
            f"(this reader knows v{cls.VERSION})",
            "ce_type",
        )
    return cls


def encode(event: Event) -> bytes:
    """The JSON body of an event (camelCase names, unset options left out)."""
    return _encoder.encode(event)


@overload
def decode(kind: type[E], data: bytes, *, max_bytes: int = ...) -> E: ...
@overload
def decode(kind: str, data: bytes, *, max_bytes: int = ...) -> Event: ...
def decode(
    kind: str | type[Event], data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Event:
    """Decode and validate the JSON body of one event of ``kind``.

    Raises :class:`EventError` naming the field for every fault: not JSON,
    wrong types, missing or out-of-range fields, a naive timestamp, a body
    over ``max_bytes``, an unknown kind.
    """
    cls = resolve_kind(kind)
    if len(data) > max_bytes:
        raise EventError(f"{len(data)} bytes is over the limit of {max_bytes}")
    try:
        return _decoders[cls].decode(data)
    except msgspec.ValidationError as exc:
        raise _translate(exc) from exc
    except msgspec.DecodeError as exc:
        raise EventError(f"not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise EventError("nested too deeply") from exc


def validate(event: Event, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Check an event built in code as a reader would; return its body.

    Constructors do not check constraints such as non-negative durations, so a
    publisher runs the same decoder a subscriber will.
    """
    body = encode(event)
    decode(kind_of(event), body, max_bytes=max_bytes)
    return body


def _translate(exc: msgspec.ValidationError) -> EventError:
    match = _AT_RE.match(str(exc))
    assert match is not None  # the pattern matches any text
    reason, path = match["reason"], match["path"] or ""
    missing = _MISSING_RE.match(reason)
    if missing:
        path = f"{path}.{missing['name']}"
        reason = "missing required field"
    field = path.lstrip(".") or None
    return EventError(reason, field)


# Fields that tell one kind's body from another's, for bodies that arrive
# without a ce_type header (a file handed to ``nccoord validate``).
_MARKS: tuple[tuple[str, type[Event]], ...] = (
    ("override", Override),
    ("overrideId", OverrideRevoke),
    ("signal", ControlSignal),
)


def infer_kind(data: bytes) -> type[Event]:
    """Guess the kind of a body that came without headers.

    ``override`` marks an Override, ``overrideId`` (without ``override``) a
    revoke, ``signal`` a control signal; ``kind`` tells a status update from a
    broadcast; ``agentId`` without ``kind`` is a heartbeat.
    """
    try:
        body = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise EventError(f"not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise EventError("an event body must be a JSON object")
    for mark, cls in _MARKS:
        if mark in body:
            return cls
    kind = body.get("kind")
    if kind in StatusUpdate._REQUIRED:
        return StatusUpdate
    if kind in Broadcast._REQUIRED:
        return Broadcast
    if "kind" not in body and "agentId" in body:
        return Heartbeat
    raise EventError("cannot tell the event kind from the body; name it", "kind")
