"""Event metadata as Kafka headers, after the CloudEvents Kafka binding.

Binary content mode: the record value is the event's JSON body and every
attribute is a header named ``ce_<attribute>`` holding UTF-8 text.

===================  =====================================================
header               meaning
===================  =====================================================
``ce_specversion``   ``1.0``
``ce_id``            unique id of the event (a UUID)
``ce_type``          kind and major schema version: ``nccoord.heartbeat.v1``
``ce_source``        the publishing instance: ``/nccoord/<name>/<incarnation>``
``ce_time``          when it was published, RFC 3339 with a zone
``ce_sequence``      per-source sequence number, 1, 2, 3, ... (decimal)
``ce_eventchainid``  optional causal chain id (``eventChainId``)
``content-type``     ``application/json``
===================  =====================================================

CloudEvents attribute names are lower-case letters and digits only, so the
``eventChainId`` of the events' description travels as ``ce_eventchainid``.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import EventError
from .events import DEFAULT_MAX_BYTES, Event, decode, parse_type, type_name

logger = logging.getLogger(__name__)

SPECVERSION = "1.0"
CONTENT_TYPE_JSON = "application/json"

SPEC = "ce_specversion"
ID = "ce_id"
TYPE = "ce_type"
SOURCE = "ce_source"
TIME = "ce_time"
SEQUENCE = "ce_sequence"
CHAIN = "ce_eventchainid"
CONTENT_TYPE = "content-type"

DLQ_REASON = "nccoord_dlq_reason"
DLQ_FIELD = "nccoord_dlq_field"
DLQ_TOPIC = "nccoord_dlq_topic"
DLQ_PARTITION = "nccoord_dlq_partition"
DLQ_OFFSET = "nccoord_dlq_offset"
# Set (to the original size) when only the head of a record fitted.
DLQ_TRUNCATED = "nccoord_dlq_truncated"

RawHeaders = Sequence[tuple[str, bytes | str | None]]
"""Headers as confluent-kafka hands them over."""
HeaderList = list[tuple[str, bytes | str | None]]
"""Headers as confluent-kafka takes them."""


@dataclass(frozen=True, slots=True)
class EventMeta:
    """The CloudEvents attributes of one event."""

    id: str
    type: str
    source: str
    time: datetime
    sequence: int | None = None
    chain_id: str | None = None

    @property
    def kind(self) -> builtins.type[Event]:
        return parse_type(self.type)


def format_time(moment: datetime) -> str:
    """RFC 3339 text, with ``Z`` for UTC."""
    if moment.tzinfo is None:
        raise EventError("a time needs a zone", TIME)
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def parse_time(text: str, field: str = TIME) -> datetime:
    """An RFC 3339 time with a zone; a naive or malformed time is an error."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise EventError(f"{text!r} is not an RFC 3339 time", field) from None
    if moment.tzinfo is None:
        raise EventError(f"{text!r} has no zone", field)
    return moment


def to_headers(meta: EventMeta) -> HeaderList:
    """The Kafka headers of an event."""
    headers = [
        (SPEC, SPECVERSION),
        (ID, meta.id),
        (TYPE, meta.type),
        (SOURCE, meta.source),
        (TIME, format_time(meta.time)),
        (CONTENT_TYPE, CONTENT_TYPE_JSON),
    ]
    if meta.sequence is not None:
        headers.append((SEQUENCE, str(meta.sequence)))
    if meta.chain_id is not None:
        headers.append((CHAIN, meta.chain_id))
    return [(name, value.encode()) for name, value in headers]


def header_text(headers: RawHeaders | None, name: str) -> str | None:
    """The last value of header ``name`` as text, or ``None`` if absent."""
    return _text(dict(headers or ()), name)


def _text(headers: Mapping[str, bytes | str | None], name: str) -> str | None:
    found = headers.get(name)
    if found is None or isinstance(found, str):
        return found
    try:
        return found.decode()
    except UnicodeDecodeError:
        raise EventError("header is not UTF-8", name) from None


def _required(headers: Mapping[str, bytes | str | None], name: str) -> str:
    value = _text(headers, name)
    if not value:
        raise EventError("missing header", name)
    return value


def from_headers(headers: RawHeaders | None) -> EventMeta:
    """Read and check the CloudEvents attributes of a record."""
    found = dict(headers or ())  # a repeated header: the last one counts
    spec = _required(found, SPEC)
    if spec != SPECVERSION:
        raise EventError(f"unsupported CloudEvents version {spec!r}", SPEC)
    sequence_text = _text(found, SEQUENCE)
    sequence = None
    if sequence_text is not None:
        digits = sequence_text.isascii() and sequence_text.isdigit()
        if not digits or len(sequence_text) > 19:
            reason = f"{sequence_text[:40]!r} is not a sequence number"
            raise EventError(reason, SEQUENCE)
        sequence = int(sequence_text)
    content_type = _text(found, CONTENT_TYPE)
    if content_type is not None and not content_type.startswith(CONTENT_TYPE_JSON):
        raise EventError(f"unsupported content type {content_type!r}", CONTENT_TYPE)
    return EventMeta(
        id=_required(found, ID),
        type=_required(found, TYPE),
        source=_required(found, SOURCE),
        time=parse_time(_required(found, TIME)),
        sequence=sequence,
        chain_id=_text(found, CHAIN) or None,
    )


def decode_record(
    headers: RawHeaders | None,
    value: bytes | None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[Event, EventMeta]:
    """Decode one consumed record into its event and metadata."""
    if value is None:
        raise EventError("record has no value")
    meta = from_headers(headers)
    return decode(parse_type(meta.type), value, max_bytes=max_bytes), meta


def new_meta(
    event: Event,
    *,
    id: str,
    source: str,
    sequence: int | None,
    chain_id: str | None = None,
    time: datetime | None = None,
) -> EventMeta:
    """Metadata for an event about to be published."""
    return EventMeta(
        id=id,
        type=type_name(event),
        source=source,
        time=time or datetime.now(UTC),
        sequence=sequence,
        chain_id=chain_id,
    )
