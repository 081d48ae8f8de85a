"""Overrides on a virtual clock, supervisors, and signed overrides.

DESIGN.md section 5: overrides apply from their timestamp for their
duration, end on expiry or revoke, a late override that already expired is
never applied, and an agent with trusted keys refuses unsigned, forged,
tampered and replayed overrides and says why.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nccoord.errors import SignatureError
from nccoord.events import (
    Event,
    Override,
    OverrideRevoke,
    OverrideSpec,
    StatusUpdate,
    decode,
    encode,
)
from nccoord.overrides import Drift, FailureRate, OverrideBook, Supervisor
from nccoord.signing import (
    Signer,
    Verifier,
    load_public_key,
    public_key_text,
    signed_bytes,
)

T0 = datetime(2025, 7, 26, 0, 12, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def override(
    oid: str = "o1",
    start: float = 0,
    duration: float = 120,
    value: float = 0.85,
    target: str = "strategy-alpha",
) -> Override:
    return Override(
        target=target,
        timestamp=at(start),
        override=OverrideSpec(
            type="threshold-adjustment", new_value=value, duration_seconds=duration
        ),
        override_id=oid,
    )


def revoke(oid: str = "o1", when: float = 0) -> OverrideRevoke:
    return OverrideRevoke(target="strategy-alpha", timestamp=at(when), override_id=oid)


# -- the book ----------------------------------------------------------------


def test_an_override_applies_from_its_timestamp_for_its_duration() -> None:
    book = OverrideBook()
    assert book.offer(override(start=10), at(0)).reason == "applied"
    assert book.in_force("strategy-alpha", at(9)) == []
    assert book.value("strategy-alpha", "threshold-adjustment", at(10)) == 0.85
    assert book.value("strategy-alpha", "threshold-adjustment", at(129.9)) == 0.85
    assert book.in_force("strategy-alpha", at(130)) == []
    assert [o.id for o in book.expire(at(130))] == ["o1"]
    assert book.ended("o1") == "expired"


def test_the_seed_example_override_applies_for_120_seconds() -> None:
    body = (
        b'{"target": "strategy-alpha", "timestamp": "2025-07-26T00:12:00Z",'
        b' "override": {"type": "threshold-adjustment", "newValue": 0.85,'
        b' "durationSeconds": 120}}'
    )
    book = OverrideBook()
    outcome = book.offer(decode(Override, body), at(1), event_id="ce-1")
    assert outcome.changed and outcome.id == "ce-1"
    assert book.value("strategy-alpha", "threshold-adjustment", at(119)) == 0.85
    assert book.value("strategy-alpha", "threshold-adjustment", at(120)) is None


def test_a_late_override_that_already_expired_is_never_applied() -> None:
    book = OverrideBook()
    outcome = book.offer(override(duration=30), at(30))
    assert not outcome.changed
    assert outcome.reason == "expired before it arrived"
    assert book.in_force("strategy-alpha", at(29)) == []


def test_a_revoke_ends_an_override_at_once_and_twice_changes_nothing() -> None:
    book = OverrideBook()
    book.offer(override(), at(0))
    assert book.revoke(revoke(when=5), at(5)).reason == "revoked"
    assert book.in_force("strategy-alpha", at(6)) == []
    assert not book.revoke(revoke(when=6), at(6)).changed


def test_a_duplicated_override_changes_nothing() -> None:
    book = OverrideBook()
    book.offer(override(), at(0))
    assert book.offer(override(), at(1)).reason == "duplicate"
    book.revoke(revoke(), at(2))
    again = book.offer(override(), at(3))
    assert not again.changed and "revoked" in again.reason
    assert book.in_force("strategy-alpha", at(3)) == []


def test_an_override_whose_revoke_came_first_is_not_applied() -> None:
    book = OverrideBook()
    assert book.revoke(revoke(), at(0)).reason == "revoked before it arrived"
    assert not book.offer(override(), at(1)).changed
    assert book.in_force("strategy-alpha", at(1)) == []


def test_the_newest_override_of_a_type_wins() -> None:
    book = OverrideBook()
    book.offer(override("old", start=0, value=0.5), at(0))
    book.offer(override("new", start=10, value=0.9), at(10))
    kind = "threshold-adjustment"
    assert book.value("strategy-alpha", kind, at(11)) == 0.9
    book.revoke(revoke("new"), at(12))
    assert book.value("strategy-alpha", kind, at(12)) == 0.5


@st.composite
def override_log(draw: st.DrawFn) -> list[tuple[str, float, Event]]:
    """Overrides and revokes as read, with the virtual time they were read."""
    items: list[tuple[str, float, Event]] = []
    now = 0.0
    for _ in range(draw(st.integers(0, 30))):
        now += draw(st.floats(0, 20))
        oid = f"o{draw(st.integers(0, 5))}"
        if draw(st.booleans()):
            start = now - draw(st.floats(0, 60))  # issued up to a minute ago
            duration = draw(st.integers(0, 60))
            items.append(("offer", now, override(oid, start, duration)))
        else:
            items.append(("revoke", now, revoke(oid, now)))
    return items


@pytest.mark.property
@settings(max_examples=300, print_blob=True, deadline=None)
@given(override_log(), st.floats(0, 20))
def test_only_unexpired_unrevoked_overrides_are_ever_in_force(
    items: list[tuple[str, float, Event]], extra: float
) -> None:
    book = OverrideBook()
    revoked: set[str] = set()
    applied: dict[str, Override] = {}
    for kind, now, event in items:
        if kind == "offer":
            assert isinstance(event, Override)
            assert event.override_id is not None
            outcome = book.offer(event, at(now))
            if outcome.reason == "applied":
                # never an override that had expired, been revoked, or was seen
                assert at(now) < event.expires_at
                assert event.override_id not in revoked
                assert event.override_id not in applied
                applied[event.override_id] = event
        else:
            assert isinstance(event, OverrideRevoke)
            book.revoke(event, at(now))
            revoked.add(event.override_id)
        for check in (now, now + extra):
            book.expire(at(check))
            for active in book.in_force("strategy-alpha", at(check)):
                assert active.starts <= at(check) < active.ends
                assert active.id not in revoked
                assert active.id in applied


# -- supervisors -------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[Event, str | None]] = []

    def publish(self, event: Event, chain_id: str | None = None) -> object:
        self.events.append((event, chain_id))
        return None


def plugin(success: bool, second: float, agent: str = "a1") -> StatusUpdate:
    return StatusUpdate(
        agent_id=agent,
        timestamp=at(second),
        kind="plugin",
        plugin="scorer",
        success=success,
    )


def test_a_supervisor_revokes_when_the_failure_rate_crosses_its_threshold() -> None:
    sink = Sink()
    supervisor = Supervisor(sink, "sup", clock=lambda: at(1))
    issued = supervisor.issue("strategy-alpha", "threshold-adjustment", 0.85, 120)
    rule = FailureRate(threshold=0.5, window=30, min_events=4)
    supervisor.revoke_when(issued, rule)
    assert supervisor.observe(plugin(False, 1)) == []  # too few runs yet
    for second, success in ((2, True), (3, False)):
        assert supervisor.observe(plugin(success, second)) == []
    fired = supervisor.observe(plugin(False, 4))  # 3 of 4 failed
    assert [r.override_id for r in fired] == [issued.override_id]
    assert "failure rate 3/4" in (fired[0].reason or "")
    assert sink.events[-1] == (fired[0], issued.override_id)
    assert supervisor.observe(plugin(False, 5)) == []  # revoked once
    assert supervisor.watching == []


def test_failures_outside_the_window_do_not_count() -> None:
    rule = FailureRate(threshold=0.5, window=10, min_events=2)
    assert rule.observe(plugin(False, 0)) is None
    assert rule.observe(plugin(True, 20)) is None
    assert rule.observe(plugin(True, 21)) is None


def test_drift_over_a_threshold_is_met() -> None:
    rule = Drift(threshold=0.2, window=60, min_events=2)

    def health(value: float, second: float) -> StatusUpdate:
        return StatusUpdate(
            agent_id="a1",
            timestamp=at(second),
            kind="health",
            status="healthy",
            value=value,
        )

    assert rule.observe(health(0.1, 0)) is None
    assert rule.observe(health(0.2, 1)) is None
    assert "drift" in (rule.observe(health(0.5, 2)) or "")


def test_a_watch_ends_with_its_override() -> None:
    sink = Sink()
    now = [at(0)]
    supervisor = Supervisor(sink, "sup", clock=lambda: now[0])
    issued = supervisor.issue("t", "x", 1, 10)
    supervisor.revoke_when(issued, FailureRate(threshold=0.0, min_events=1))
    now[0] = at(11)
    assert supervisor.observe(plugin(False, 11)) == []
    assert supervisor.watching == []


# -- signed overrides --------------------------------------------------------


@pytest.fixture
def signer() -> Signer:
    return Signer.generate("sup-2025")


@pytest.fixture
def verifier(signer: Signer) -> Verifier:
    return Verifier({"sup-2025": signer.public_key}, max_age=300, max_skew=30)


def refused(book: OverrideBook, event: Event, now: datetime) -> str:
    if isinstance(event, Override):
        outcome = book.offer(event, now)
    else:
        assert isinstance(event, OverrideRevoke)
        outcome = book.revoke(event, now)
    assert not outcome.changed, outcome
    assert outcome.reason.startswith("refused: ")
    return outcome.reason.removeprefix("refused: ")


def test_a_signed_override_survives_the_wire_and_applies(
    signer: Signer, verifier: Verifier
) -> None:
    signed = signer.sign(override())
    assert signed.key_id == "sup-2025" and signed.signature
    read = decode(Override, encode(signed))
    book = OverrideBook(verifier)
    assert book.offer(read, at(1)).reason == "applied"


def test_unsigned_overrides_and_revokes_are_refused(
    verifier: Verifier, caplog: pytest.LogCaptureFixture
) -> None:
    book = OverrideBook(verifier)
    with caplog.at_level(logging.WARNING, "nccoord.overrides"):
        assert refused(book, override(), at(1)) == "unsigned"
        assert refused(book, revoke(), at(1)) == "unsigned"
    assert "refused override o1 for strategy-alpha" in caplog.text
    assert "unsigned" in caplog.text


def test_a_forged_override_is_refused(verifier: Verifier) -> None:
    forger = Signer.generate("sup-2025")  # the trusted key id, another key
    book = OverrideBook(verifier)
    reason = refused(book, forger.sign(override()), at(1))
    assert reason == "bad signature: forged or tampered"


def test_a_tampered_override_is_refused(signer: Signer, verifier: Verifier) -> None:
    signed = signer.sign(override(value=0.85))
    body = encode(signed).replace(b"0.85", b"0.99")
    tampered = decode(Override, body)
    assert tampered.override.new_value == 0.99
    book = OverrideBook(verifier)
    assert refused(book, tampered, at(1)) == "bad signature: forged or tampered"
    longer = msgspec.structs.replace(
        signed, override=msgspec.structs.replace(signed.override, duration_seconds=9e3)
    )
    assert refused(book, longer, at(1)).startswith("bad signature")


def test_an_override_signature_does_not_pass_as_a_revoke(
    signer: Signer, verifier: Verifier
) -> None:
    signed = signer.sign(override())
    forged = OverrideRevoke(
        target=signed.target,
        timestamp=signed.timestamp,
        override_id="o1",
        key_id=signed.key_id,
        signature=signed.signature,
    )
    assert refused(OverrideBook(verifier), forged, at(1)).startswith("bad signature")


def test_a_replayed_override_is_refused(signer: Signer, verifier: Verifier) -> None:
    signed = signer.sign(override())
    book = OverrideBook(verifier)
    assert book.offer(signed, at(1)).reason == "applied"
    book.revoke(signer.sign(revoke(when=2)), at(2))
    assert refused(book, signed, at(3)) == "replayed: override id 'o1'"
    assert book.in_force("strategy-alpha", at(3)) == []


def test_an_override_issued_outside_the_window_is_refused(
    signer: Signer, verifier: Verifier
) -> None:
    book = OverrideBook(verifier)
    old = signer.sign(override("old", start=0, duration=3600))
    assert refused(book, old, at(301)) == "too old: issued 301s ago"
    ahead = signer.sign(override("ahead", start=100))
    assert refused(book, ahead, at(0)) == "from the future: issued 100s ahead"


def test_unknown_keys_malformed_signatures_and_missing_ids_are_refused(
    signer: Signer, verifier: Verifier
) -> None:
    book = OverrideBook(verifier)
    stranger = Signer.generate("someone-else").sign(override("s"))
    assert refused(book, stranger, at(1)) == "unknown key: 'someone-else'"
    garbled = msgspec.structs.replace(signer.sign(override("g")), signature="!!")
    assert refused(book, garbled, at(1)) == "malformed signature"
    anonymous = signer.sign(msgspec.structs.replace(override(), override_id=None))
    outcome = book.offer(anonymous, at(1), event_id="ce-1")
    assert outcome.reason == "refused: no override id: a signed override needs one"


def test_signed_bytes_are_the_sorted_json_after_the_type(signer: Signer) -> None:
    signed = signer.sign(override())
    expected = (
        b"nccoord.override.v1\n"
        b'{"keyId":"sup-2025","override":{"durationSeconds":120,'
        b'"newValue":0.85,"type":"threshold-adjustment"},"overrideId":"o1",'
        b'"target":"strategy-alpha","timestamp":"2025-07-26T00:12:00Z"}'
    )
    assert signed_bytes(signed) == expected
    raw = base64.b64decode(signed.signature or "")
    signer.public_key.verify(raw, expected)  # raises if not the signed bytes


def test_public_keys_load_from_base64_raw_and_pem(signer: Signer) -> None:
    from cryptography.hazmat.primitives import serialization

    text = public_key_text(signer.public_key)
    pem = signer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for form in (text, base64.b64decode(text), pem):
        assert public_key_text(load_public_key(form)) == text


def test_verifier_raises_a_library_error_with_the_reason(verifier: Verifier) -> None:
    with pytest.raises(SignatureError) as caught:
        verifier.check(override(), at(0))
    assert caught.value.reason == "unsigned"
