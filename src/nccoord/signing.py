"""Ed25519 signatures on overrides and revokes (opt-in).

A supervisor signs with a private key it names by ``keyId``; an agent given
trusted public keys by ``keyId`` refuses what it cannot verify. Needs the
``cryptography`` package (``pip install 'nccoord[signing]'``).

The signed bytes
----------------
The signature covers exactly::

    b"<ce type>\\n" + JSON(event with "signature" left out)

where ``<ce type>`` is the event's CloudEvents type (``nccoord.override.v1``
or ``nccoord.override-revoke.v1``, so an override's signature cannot pass as
a revoke's) and ``JSON`` is the event's wire JSON as nccoord writes it,
with the object keys of every level sorted by their UTF-8 bytes, no
whitespace, fields that are unset left out, ``keyId`` included, timestamps
as RFC 3339 (``Z`` for UTC, fractional seconds only when not zero) and
numbers in their shortest round-trip form. A verifier re-encodes the decoded
event the same way, so the check is over what the agent will act on, not
over bytes it might read differently. The signature travels base64-encoded
(standard alphabet, padded) in ``signature``.

What a verifier refuses, and the reason it gives
------------------------------------------------
``unsigned`` (no ``signature`` or no ``keyId``), ``unknown key`` (a
``keyId`` not trusted), ``malformed signature`` (not 64 bytes of base64),
``bad signature`` (forged, or tampered with after signing), and for
overrides only: ``no override id`` (the id is the nonce), ``too old``
(issued more than ``max_age`` seconds ago), ``from the future`` (more than
``max_skew`` seconds ahead of the agent's clock) and ``replayed`` (an
override id already accepted under that key). A revoke is idempotent, so
repeating one is harmless and it is not checked for replay.

The replay memory lives in the process: an agent that restarts reads the
override log again and may apply an override it applied before, which is
the same override, not a replay of it. ``max_age`` bounds what a captured
override can do later; an agent started more than ``max_age`` after an
override was issued refuses it even if it is still in force.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import TypeVar

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import ConfigError, SignatureError
from .events import Override, OverrideRevoke, type_name

logger = logging.getLogger(__name__)

Signable = Override | OverrideRevoke
S = TypeVar("S", Override, OverrideRevoke)

SIGNATURE_BYTES = 64


def signed_bytes(event: Signable) -> bytes:
    """The exact bytes a signature of ``event`` covers (see the module doc)."""
    unsigned = msgspec.structs.replace(event, signature=None)
    body = msgspec.json.encode(unsigned, order="sorted")
    return type_name(event).encode() + b"\n" + body


def load_public_key(data: bytes | str) -> Ed25519PublicKey:
    """A public key from PEM, 32 raw bytes, or those 32 bytes in base64."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(raw)
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError("not an Ed25519 public key")
            return key
        if len(raw) != 32:
            raw = base64.b64decode(raw, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"cannot read an Ed25519 public key: {exc}") from exc


def load_private_key(data: bytes | str) -> Ed25519PrivateKey:
    """A private key from unencrypted PEM, a 32-byte seed, or it in base64."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(raw, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ConfigError("not an Ed25519 private key")
            return key
        if len(raw) != 32:
            raw = base64.b64decode(raw, validate=True)
        return Ed25519PrivateKey.from_private_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"cannot read an Ed25519 private key: {exc}") from exc


def public_key_text(key: Ed25519PublicKey) -> str:
    """The 32 raw bytes of a public key in base64, as agents are given it."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class Signer:
    """Signs overrides and revokes with one private key named ``key_id``."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        self.key_id = key_id
        self._key = private_key

    @classmethod
    def generate(cls, key_id: str) -> Signer:
        """A signer with a fresh key pair (give agents :attr:`public_key`)."""
        return cls(key_id, Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, event: S) -> S:
        """The event with this signer's ``keyId`` and its signature."""
        named = msgspec.structs.replace(event, key_id=self.key_id, signature=None)
        signature = self._key.sign(signed_bytes(named))
        return msgspec.structs.replace(
            named, signature=base64.b64encode(signature).decode()
        )


class Verifier:
    """Checks signed overrides and revokes against trusted public keys."""

    def __init__(
        self,
        trusted: Mapping[str, Ed25519PublicKey | bytes | str],
        *,
        max_age: float = 600.0,
        max_skew: float = 30.0,
        remember: int = 100_000,
    ) -> None:
        if not trusted:
            raise ConfigError("a verifier needs at least one trusted key")
        self.keys = {
            key_id: key if isinstance(key, Ed25519PublicKey) else load_public_key(key)
            for key_id, key in trusted.items()
        }
        self.max_age = max_age
        self.max_skew = max_skew
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._remember = remember

    def check(self, event: Signable, now: datetime) -> None:
        """Return if ``event`` is acceptable at wall time ``now``; else raise.

        Raises :class:`~nccoord.errors.SignatureError` with the reason. An
        accepted override's id is remembered, so the same override offered
        again is refused as ``replayed``.
        """
        key_id = self._verify(event)
        if isinstance(event, OverrideRevoke):
            return
        if event.override_id is None:
            raise SignatureError("no override id", "a signed override needs one")
        age = (now - event.timestamp).total_seconds()
        if age > self.max_age:
            raise SignatureError("too old", f"issued {age:.0f}s ago")
        if -age > self.max_skew:
            raise SignatureError("from the future", f"issued {-age:.0f}s ahead")
        nonce = (key_id, event.override_id)
        if nonce in self._seen:
            raise SignatureError("replayed", f"override id {event.override_id!r}")
        self._seen[nonce] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)

    def _verify(self, event: Signable) -> str:
        if event.signature is None or event.key_id is None:
            raise SignatureError("unsigned")
        key = self.keys.get(event.key_id)
        if key is None:
            raise SignatureError("unknown key", repr(event.key_id))
        try:
            signature = base64.b64decode(event.signature, validate=True)
        except binascii.Error:
            signature = b""
        if len(signature) != SIGNATURE_BYTES:
            raise SignatureError("malformed signature")
        try:
            key.verify(signature, signed_bytes(event))
        except InvalidSignature:
            raise SignatureError("bad signature", "forged or tampered") from None
        return event.key_id
