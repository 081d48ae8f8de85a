"""Opt-in Avro validation of events with fastavro.

Every kind has an Avro schema in ``nccoord/schemas/<kind>.avsc``, kept field
for field in step with its Struct (a test checks that they agree). The Struct
is the stricter of the two: Avro has no zone-aware RFC 3339 strings, no
length or range limits and no enum symbols with hyphens, so timestamps are
strings and literal choices such as ``signal`` are plain strings there.

Install the ``avro`` extra (``pip install nccoord[avro]``) to use it.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from importlib import resources
from typing import Any

import msgspec

from .errors import ConfigError, EventError
from .events import Event, kind_of

logger = logging.getLogger(__name__)


def schema_text(kind: type[Event]) -> dict[str, Any]:
    """The Avro schema of a kind, as the JSON object stored in the package."""
    path = resources.files("nccoord") / "schemas" / f"{kind.KIND}.avsc"
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


@cache
def parsed_schema(kind: type[Event]) -> Any:
    """The schema parsed by fastavro (cached)."""
    try:
        import fastavro
    except ImportError as exc:
        raise ConfigError("Avro validation needs fastavro: nccoord[avro]") from exc
    return fastavro.parse_schema(schema_text(kind))


def to_datum(event: Event) -> dict[str, Any]:
    """The event as the plain values Avro writes (the JSON body's values)."""
    datum: dict[str, Any] = msgspec.to_builtins(event)
    return datum


def validate_avro(event: Event) -> None:
    """Raise :class:`EventError` naming the field if Avro rejects the event."""
    from fastavro.validation import ValidationError, validate

    schema = parsed_schema(kind_of(event))
    try:
        validate(to_datum(event), schema, raise_errors=True)
    except ValidationError as exc:
        first = exc.errors[0] if exc.errors else None
        field = _field_path(str(first.field)) if first is not None else None
        raise EventError("does not match the Avro schema", field) from exc


def _field_path(avro_field: str) -> str:
    # fastavro names a field by its record's full name: nccoord.events.X.field
    *records, name = avro_field.split(".")
    return f"override.{name}" if records and records[-1] == "OverrideSpec" else name
