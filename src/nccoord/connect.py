"""Checks of a bootstrap address before a client is built on it.

librdkafka takes any string as ``bootstrap.servers`` and then retries a
wrong or dead address quietly for as long as it is let. Commands check the
address first, so that a typo or a broker that is down ends in one line
saying what to do.
"""

from __future__ import annotations

import logging
import socket

from .errors import ConfigError, TransportError

logger = logging.getLogger(__name__)

HINT = "start one with `nccoord broker start`, or pass --bootstrap HOST:PORT"


def parse_bootstrap(text: str) -> list[tuple[str, int]]:
    """``host:port[,host:port…]`` as (host, port) pairs; raise ConfigError."""
    addresses = []
    for item in text.split(","):
        host, colon, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not colon or not host:
            raise ConfigError(f"bad bootstrap address {item!r}: expected HOST:PORT")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"bad bootstrap address {item!r}: port {port!r} is not a number "
                "from 1 to 65535"
            )
        addresses.append((host, int(port)))
    return addresses


def check_bootstrap(text: str, timeout: float = 5.0) -> None:
    """Raise unless some address of ``text`` accepts a TCP connection.

    A host name that does not resolve is a :class:`ConfigError`; addresses
    that refuse or do not answer within ``timeout`` are a
    :class:`TransportError`. Both messages are one line with the fix.
    """
    faults = []
    for host, port in parse_bootstrap(text):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except socket.gaierror as exc:
            raise ConfigError(
                f"bad bootstrap address {host}:{port}: host {host!r} is unknown"
            ) from exc
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            logger.debug("bootstrap %s:%d: %s", host, port, reason)
            faults.append(f"{host}:{port} ({reason.lower()})")
    raise TransportError(f"no Kafka broker answers at {', '.join(faults)}: {HINT}")
