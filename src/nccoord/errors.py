"""The library's exceptions: one base, a few kinds beneath it.

Errors raised by confluent-kafka are translated at the adapter's edge into
these types; the original error stays reachable as ``__cause__``.
"""

from __future__ import annotations


class NccoordError(Exception):
    """Base of every error nccoord raises."""


class ConfigError(NccoordError):
    """A setting is missing or has a value nccoord cannot use."""


class EventError(NccoordError):
    """An event could not be decoded or validated.

    ``field`` names the offending field (a dotted path such as
    ``override.durationSeconds``) or is ``None`` when the fault is not tied to
    one field (not JSON at all, too large, unknown kind).
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class TransportError(NccoordError):
    """Kafka refused or could not complete an operation."""


class OutcomeUnknownError(TransportError):
    """A write may or may not be in the log (timed out, fatal or fenced).

    The elector treats this as lost leadership: it stops acting, rebuilds its
    producer and reads the log again.
    """


class FencedError(TransportError):
    """The broker refused a write because a newer leader fenced this one."""


class BrokerError(NccoordError):
    """A local Kafka broker could not be fetched, started or reached."""


class SignatureError(NccoordError):
    """A signed override or revoke was refused; ``reason`` says why.

    Reasons: ``unsigned``, ``unknown key``, ``malformed signature``,
    ``bad signature`` (forged or tampered), ``no override id``,
    ``too old``, ``from the future``, ``replayed``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
