"""System events: decoding, validation, headers, routing, dedup, Avro, CLI."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nccoord import event_cli, events
from nccoord import headers as hdr
from nccoord.avro import parsed_schema, schema_text, to_datum, validate_avro
from nccoord.bus import Deduplicator, route
from nccoord.errors import EventError, NccoordError
from nccoord.events import (
    Broadcast,
    ControlSignal,
    Event,
    Heartbeat,
    Override,
    OverrideRevoke,
    OverrideSpec,
    StatusUpdate,
)
from nccoord.topics import TopicNames

# The two examples exactly as the events' description writes them.
SEED_HEARTBEAT = b"""{
  "agentId": "node-caster-03",
  "timestamp": "2025-07-26T00:10:00Z",
  "status": "healthy"
}"""
SEED_OVERRIDE = b"""{
  "target": "strategy-alpha",
  "timestamp": "2025-07-26T00:12:00Z",
  "override": {
    "type": "threshold-adjustment",
    "newValue": 0.85,
    "durationSeconds": 120
  }
}"""

T0 = datetime(2025, 7, 26, 0, 10, tzinfo=UTC)

# Shared machines are slow at times: no deadline, no speed health check.
PROPERTY = settings(
    print_blob=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def samples() -> list[Event]:
    """At least one event of every kind, and every sub-kind."""
    plus2 = timezone(timedelta(hours=2))
    return [
        Heartbeat(agent_id="a-1", timestamp=T0, status="healthy"),
        Heartbeat(
            agent_id="a-1", timestamp=T0, status="degraded", interval_seconds=2.5
        ),
        ControlSignal(signal="reboot", target="a-1", timestamp=T0, reason="upgrade"),
        ControlSignal(signal="failover", group="g", timestamp=T0, params={"why": "x"}),
        ControlSignal(
            signal="elected", group="g", agent_id="a-2", term=7, timestamp=T0
        ),
        Override(
            target="strategy-alpha",
            timestamp=datetime(2025, 7, 26, 2, 12, tzinfo=plus2),
            override=OverrideSpec(type="pause", duration_seconds=30),
            override_id="ov-1",
            key_id="k1",
            signature="c2ln",
        ),
        OverrideRevoke(target="strategy-alpha", timestamp=T0, override_id="ov-1"),
        StatusUpdate(
            agent_id="a-1", timestamp=T0, kind="registration", capabilities=["x"]
        ),
        StatusUpdate(agent_id="a-1", timestamp=T0, kind="health", status="healthy"),
        StatusUpdate(
            agent_id="a-1",
            timestamp=T0,
            kind="plugin",
            plugin="p",
            success=False,
            error="e",
        ),
        StatusUpdate(
            agent_id="a-1", timestamp=T0, kind="env-sync", env={"REGION": "eu"}
        ),
        StatusUpdate(
            agent_id="a-1", timestamp=T0, kind="proposal", group="g", round=3, value="v"
        ),
        Broadcast(kind="announcement", timestamp=T0, message="maintenance at noon"),
        Broadcast(
            kind="consensus-result",
            timestamp=T0,
            group="g",
            round=3,
            term=7,
            value=42,
            voters=["a-1", "a-2"],
        ),
    ]


# -- the seed's examples -----------------------------------------------------


def test_seed_heartbeat_decodes_as_written_and_encodes_back() -> None:
    event = events.decode("heartbeat", SEED_HEARTBEAT)
    assert event == Heartbeat(agent_id="node-caster-03", timestamp=T0, status="healthy")
    assert json.loads(events.encode(event)) == json.loads(SEED_HEARTBEAT)
    assert b'"timestamp":"2025-07-26T00:10:00Z"' in events.encode(event)


def test_seed_override_decodes_as_written_and_encodes_back() -> None:
    event = events.decode(Override, SEED_OVERRIDE)
    assert event.target == "strategy-alpha"
    assert event.override.type == "threshold-adjustment"
    assert event.override.new_value == 0.85
    assert event.override.duration_seconds == 120
    assert event.expires_at == datetime(2025, 7, 26, 0, 14, tzinfo=UTC)
    assert json.loads(events.encode(event)) == json.loads(SEED_OVERRIDE)
    assert b'"durationSeconds":120' in events.encode(event)  # stays an integer


def test_seed_examples_kinds_are_inferred_without_headers() -> None:
    assert events.infer_kind(SEED_HEARTBEAT) is Heartbeat
    assert events.infer_kind(SEED_OVERRIDE) is Override


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("event", samples(), ids=lambda e: type(e).__name__)
def test_every_kind_round_trips_through_json(event: Event) -> None:
    body = events.encode(event)
    assert events.decode(type(event), body) == event
    assert events.decode(event.KIND, body) == event
    assert events.infer_kind(body) is type(event)


@pytest.mark.parametrize("event", samples(), ids=lambda e: type(e).__name__)
def test_every_kind_round_trips_through_a_record(event: Event) -> None:
    meta = hdr.new_meta(
        event, id="e-1", source="/nccoord/a/1", sequence=5, chain_id="c"
    )
    decoded, read = hdr.decode_record(hdr.to_headers(meta), events.encode(event))
    assert decoded == event
    assert read == meta
    assert read.kind is type(event)


def test_kinds_have_names_versions_and_types() -> None:
    assert sorted(events.KINDS) == [
        "broadcast",
        "control",
        "heartbeat",
        "override",
        "override-revoke",
        "status",
    ]
    assert events.type_name(Heartbeat) == "nccoord.heartbeat.v1"
    assert events.parse_type("nccoord.override-revoke.v1") is OverrideRevoke


# -- what readers accept and reject ------------------------------------------


def test_unknown_extra_fields_are_ignored() -> None:
    body = json.loads(SEED_HEARTBEAT)
    body["cpu"] = {"load": [1, 2]}
    event = events.decode(Heartbeat, json.dumps(body).encode())
    assert event.agent_id == "node-caster-03"


def test_minor_version_is_accepted_unknown_major_is_an_error() -> None:
    assert events.parse_type("nccoord.heartbeat.v1.3") is Heartbeat
    with pytest.raises(EventError) as info:
        events.parse_type("nccoord.heartbeat.v2")
    assert info.value.field == "ce_type"
    assert "unknown major version v2 of heartbeat" in str(info.value)


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(EventError, match="unknown event kind 'gossip'"):
        events.parse_type("nccoord.gossip.v1")
    with pytest.raises(EventError, match="unknown event kind 'gossip'"):
        events.decode("gossip", SEED_HEARTBEAT)


def _body(base: bytes, path: str, value: Any) -> bytes:
    body = json.loads(base)
    *parents, last = path.split(".")
    node = body
    for name in parents:
        node = node[name]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return json.dumps(body).encode()


_DELETE = object()

BAD_BODIES = [
    # (kind, body, field, words in the reason)
    ("heartbeat", b"{not json", None, "not valid JSON"),
    ("heartbeat", b"[1, 2]", None, "Expected `object`, got `array`"),
    ("heartbeat", _body(SEED_HEARTBEAT, "agentId", 3), "agentId", "Expected `str`"),
    ("heartbeat", _body(SEED_HEARTBEAT, "agentId", ""), "agentId", "length >= 1"),
    ("heartbeat", _body(SEED_HEARTBEAT, "status", _DELETE), "status", "missing"),
    (
        "heartbeat",
        _body(SEED_HEARTBEAT, "timestamp", "2025-07-26T00:10:00"),
        "timestamp",
        "timezone",
    ),
    ("heartbeat", _body(SEED_HEARTBEAT, "timestamp", "yesterday"), "timestamp", ""),
    (
        "override",
        _body(SEED_OVERRIDE, "override.durationSeconds", -5),
        "override.durationSeconds",
        ">= 0",
    ),
    (
        "override",
        _body(SEED_OVERRIDE, "override.durationSeconds", "120"),
        "override.durationSeconds",
        "Expected `int | float`, got `str`",
    ),
    ("override", _body(SEED_OVERRIDE, "override.type", _DELETE), "override.type", ""),
    ("override", _body(SEED_OVERRIDE, "override", _DELETE), "override", "missing"),
    (
        "control",
        b'{"signal": "elected", "group": "g", "timestamp": "2025-07-26T00:10:00Z"}',
        "agentId",
        "required for signal 'elected'",
    ),
    (
        "control",
        b'{"signal": "dance", "target": "a", "timestamp": "2025-07-26T00:10:00Z"}',
        "signal",
        "Invalid enum value 'dance'",
    ),
    (
        "control",
        b'{"signal": "stop", "timestamp": "2025-07-26T00:10:00Z"}',
        "target",
        "needs a target or a group",
    ),
    (
        "status",
        b'{"agentId": "a", "kind": "proposal", "group": "g", "round": 1,'
        b' "timestamp": "2025-07-26T00:10:00Z"}',
        "value",
        "required when kind is 'proposal'",
    ),
    (
        "broadcast",
        b'{"kind": "consensus-result", "group": "g", "round": -1, "term": 1,'
        b' "value": 1, "voters": [], "timestamp": "2025-07-26T00:10:00Z"}',
        "round",
        ">= 0",
    ),
    (
        "broadcast",
        b'{"kind": "consensus-result", "group": "g", "round": 1, "term": 1,'
        b' "value": 1, "voters": ["a", 2], "timestamp": "2025-07-26T00:10:00Z"}',
        "voters[1]",
        "Expected `str`",
    ),
]


@pytest.mark.parametrize(("kind", "body", "field", "words"), BAD_BODIES)
def test_bad_bodies_raise_one_error_naming_the_field(
    kind: str, body: bytes, field: str | None, words: str
) -> None:
    with pytest.raises(EventError) as info:
        events.decode(kind, body)
    assert info.value.field == field
    assert words in info.value.reason
    if field is not None:
        assert str(info.value).startswith(f"{field}: ")


def test_oversize_body_is_rejected_by_the_configured_limit() -> None:
    with pytest.raises(EventError, match="is over the limit of 64"):
        events.decode(Heartbeat, SEED_HEARTBEAT, max_bytes=64)
    assert events.decode(Heartbeat, SEED_HEARTBEAT, max_bytes=len(SEED_HEARTBEAT))


def test_events_built_in_code_are_checked_before_publishing() -> None:
    bad = Override(
        target="t",
        timestamp=T0,
        override=OverrideSpec(type="x", duration_seconds=-1),
    )
    with pytest.raises(EventError) as info:
        events.validate(bad)
    assert info.value.field == "override.durationSeconds"
    with pytest.raises(EventError, match="agentId: required for signal 'resigned'"):
        ControlSignal(signal="resigned", group="g", term=1, timestamp=T0)


@PROPERTY
@given(data=st.binary(max_size=2048), kind=st.sampled_from(sorted(events.KINDS)))
def test_arbitrary_bytes_decode_or_raise_the_library_error(
    data: bytes, kind: str
) -> None:
    try:
        event = events.decode(kind, data)
    except EventError as exc:
        assert isinstance(exc, NccoordError)
        assert exc.reason
    else:
        assert isinstance(event, events.KINDS[kind])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
FIELD_NAMES = st.sampled_from(
    ["agentId", "timestamp", "status", "target", "override", "signal", "kind",
     "group", "round", "term", "value", "voters", "env", "durationSeconds"]
)  # fmt: skip


@PROPERTY
@given(
    body=st.dictionaries(FIELD_NAMES, JSON | st.just("2025-07-26T00:10:00Z")),
    kind=st.sampled_from(sorted(events.KINDS)),
)
def test_arbitrary_objects_decode_or_raise_the_library_error(
    body: dict[str, Any], kind: str
) -> None:
    data = json.dumps(body).encode()
    try:
        event = events.decode(kind, data)
    except EventError as exc:
        assert exc.reason
    else:
        assert events.decode(kind, events.encode(event)) == event


@PROPERTY
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [hdr.SPEC, hdr.ID, hdr.TYPE, hdr.SOURCE, hdr.TIME, hdr.SEQUENCE]
            ),
            st.binary(max_size=30) | st.sampled_from([b"1.0", b"nccoord.heartbeat.v1"]),
        ),
        max_size=8,
    ),
    value=st.none() | st.binary(max_size=64) | st.just(SEED_HEARTBEAT),
)
def test_arbitrary_records_decode_or_raise_the_library_error(
    headers: list[tuple[str, bytes]], value: bytes | None
) -> None:
    try:
        event, meta = hdr.decode_record(headers, value)
    except EventError as exc:
        assert exc.reason
    else:
        assert isinstance(event, meta.kind)


@PROPERTY
@given(
    target=st.text(min_size=1, max_size=40),
    when=st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(9000, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))]),
    ),
    duration=st.integers(0, events.MAX_DURATION_SECONDS)
    | st.floats(0, events.MAX_DURATION_SECONDS),
    value=st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
)
def test_any_valid_override_round_trips(
    target: str, when: datetime, duration: float, value: events.Scalar
) -> None:
    event = Override(
        target=target,
        timestamp=when,
        override=OverrideSpec(type="t", new_value=value, duration_seconds=duration),
    )
    assert events.decode(Override, events.validate(event)) == event


# -- headers ------------------------------------------------------------------


def _meta_headers() -> list[tuple[str, bytes | str | None]]:
    meta = hdr.new_meta(
        Heartbeat(agent_id="a", timestamp=T0, status="ok"),
        id="id-1",
        source="/nccoord/a/x",
        sequence=9,
        time=T0,
    )
    return hdr.to_headers(meta)


def test_headers_follow_the_cloudevents_kafka_binding() -> None:
    found = dict(_meta_headers())
    assert found == {
        "ce_specversion": b"1.0",
        "ce_id": b"id-1",
        "ce_type": b"nccoord.heartbeat.v1",
        "ce_source": b"/nccoord/a/x",
        "ce_time": b"2025-07-26T00:10:00Z",
        "ce_sequence": b"9",
        "content-type": b"application/json",
    }


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        (hdr.ID, None, "missing header"),
        (hdr.TYPE, b"heartbeat", "not an nccoord event type"),
        (hdr.TYPE, b"nccoord.heartbeat.v9", "unknown major version v9"),
        (hdr.TIME, b"2025-07-26T00:10:00", "has no zone"),
        (hdr.TIME, b"\xff", "not UTF-8"),
        (hdr.SEQUENCE, b"-1", "not a sequence number"),
        (hdr.SPEC, b"0.3", "unsupported CloudEvents version"),
        (hdr.CONTENT_TYPE, b"application/avro", "unsupported content type"),
    ],
)
def test_bad_headers_name_the_header(
    name: str, value: bytes | None, words: str
) -> None:
    headers = [(k, v) for k, v in _meta_headers() if k != name]
    if value is not None:
        headers.append((name, value))
    with pytest.raises(EventError) as info:
        hdr.decode_record(headers, SEED_HEARTBEAT)
    assert info.value.field == name
    assert words in info.value.reason


def test_chain_id_travels_as_a_header() -> None:
    event = Heartbeat(agent_id="a", timestamp=T0, status="ok")
    meta = hdr.new_meta(event, id="i", source="s", sequence=1, chain_id="chain-7")
    assert (hdr.CHAIN, b"chain-7") in hdr.to_headers(meta)
    assert hdr.from_headers(hdr.to_headers(meta)).chain_id == "chain-7"


# -- routing ------------------------------------------------------------------


def test_each_kind_goes_to_its_topic_with_its_key() -> None:
    names = TopicNames("t1.")
    found = {(type(e).__name__, *route(e, names)) for e in samples()}
    assert found == {
        ("Heartbeat", "t1.system-heartbeat", "a-1"),
        ("ControlSignal", "t1.system-control", "a-1"),
        ("ControlSignal", "t1.system-control", "g"),
        ("Override", "t1.system-override", "strategy-alpha"),
        ("OverrideRevoke", "t1.system-override", "strategy-alpha"),
        ("StatusUpdate", "t1.system-status", "a-1"),
        ("Broadcast", "t1.system-broadcast", None),
        ("Broadcast", "t1.system-broadcast", "g"),
    }


# -- deduplication --------------------------------------------------------------


def test_deduplicator_drops_repeats_per_source_and_partition() -> None:
    dedup = Deduplicator()
    assert not dedup.is_repeat("s", "t", 0, 1)
    dedup.mark("s", "t", 0, 1)
    dedup.mark("s", "t", 0, 2)
    assert dedup.is_repeat("s", "t", 0, 2)
    assert dedup.is_repeat("s", "t", 0, 1)
    assert not dedup.is_repeat("s", "t", 1, 2)  # another partition, another order
    assert not dedup.is_repeat("s2", "t", 0, 1)  # another source
    assert len(dedup) == 1


def test_deduplicator_memory_is_bounded() -> None:
    dedup = Deduplicator(max_sources=3)
    for n in range(10):
        dedup.mark(f"s{n}", "t", 0, 1)
    assert len(dedup) == 3
    assert dedup.is_repeat("s9", "t", 0, 1)
    assert not dedup.is_repeat("s0", "t", 0, 1)


# -- Avro ---------------------------------------------------------------------


def _avro_of(info: mi.Type) -> Any:
    """The Avro type a msgspec type maps to (the contract the .avsc files keep)."""
    if isinstance(info, mi.UnionType):
        kinds = [_avro_of(t) for t in info.types]
        return (
            ["null", *[k for k in kinds if k != "null"]] if "null" in kinds else kinds
        )
    if isinstance(info, (mi.StrType, mi.DateTimeType, mi.LiteralType)):
        return "string"
    if isinstance(info, mi.NoneType):
        return "null"
    simple = {mi.BoolType: "boolean", mi.IntType: "long", mi.FloatType: "double"}
    if type(info) in simple:
        return simple[type(info)]
    if isinstance(info, mi.ListType):
        return {"type": "array", "items": _avro_of(info.item_type)}
    if isinstance(info, mi.DictType):
        return {"type": "map", "values": _avro_of(info.value_type)}
    if isinstance(info, mi.StructType):
        return {"name": info.cls.__name__, "fields": _fields_of(info)}
    raise AssertionError(f"no Avro mapping for {info}")


def _fields_of(info: mi.StructType) -> list[tuple[str, Any, bool]]:
    return [(f.encode_name, _avro_of(f.type), f.required) for f in info.fields]


def _schema_fields(schema: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    def norm(avro: Any) -> Any:
        if isinstance(avro, dict) and avro.get("type") == "record":
            return {"name": avro["name"], "fields": _schema_fields(avro)}
        if isinstance(avro, dict):
            return {k: norm(v) for k, v in avro.items() if k != "doc"}
        if isinstance(avro, list):
            return [norm(v) for v in avro]
        return avro

    return [(f["name"], norm(f["type"]), "default" not in f) for f in schema["fields"]]


@pytest.mark.parametrize("kind", events.KINDS.values(), ids=lambda k: k.KIND)
def test_avro_schema_and_struct_agree_on_every_field(kind: type[Event]) -> None:
    schema = schema_text(kind)
    assert schema["name"] == kind.__name__
    assert schema["version"] == kind.VERSION
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    assert _schema_fields(schema) == _fields_of(info)


@pytest.mark.parametrize("event", samples(), ids=lambda e: type(e).__name__)
def test_every_sample_is_valid_avro_and_round_trips(event: Event) -> None:
    import fastavro

    validate_avro(event)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_schema(type(event)), to_datum(event))
    buffer.seek(0)
    read = fastavro.schemaless_reader(buffer, parsed_schema(type(event)), None)
    assert msgspec.convert(read, type(event)) == event


def test_avro_validation_names_the_field() -> None:
    event = Heartbeat(agent_id=5, timestamp=T0, status="ok")  # type: ignore[arg-type]
    with pytest.raises(EventError) as info:
        validate_avro(event)
    assert info.value.field == "agentId"
    spec = OverrideSpec(type="x", duration_seconds="soon")  # type: ignore[arg-type]
    with pytest.raises(EventError) as info:
        validate_avro(Override(target="t", timestamp=T0, override=spec))
    assert info.value.field == "override.durationSeconds"


# -- the validate command ---------------------------------------------------------


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nccoord")
    event_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def test_validate_accepts_the_seed_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hb.json").write_bytes(SEED_HEARTBEAT)
    (tmp_path / "ov.json").write_bytes(SEED_OVERRIDE)
    files = [str(tmp_path / "hb.json"), str(tmp_path / "ov.json")]
    assert _run(["validate", "--avro", *files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{files[0]}: ok heartbeat v1", f"{files[1]}: ok override v1"]


def test_validate_reports_each_fault_with_file_field_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = {
        "good.json": SEED_HEARTBEAT,
        "notjson.json": b"{oops",
        "type.json": _body(SEED_HEARTBEAT, "agentId", 7),
        "missing.json": _body(SEED_HEARTBEAT, "status", _DELETE),
        "negative.json": _body(SEED_OVERRIDE, "override.durationSeconds", -1),
        "naive.json": _body(SEED_OVERRIDE, "timestamp", "2025-07-26T00:12:00"),
        "unknown.json": b'{"hello": "world"}',
        "big.json": _body(SEED_HEARTBEAT, "status", "x" * 5000),
    }
    for name, body in bodies.items():
        (tmp_path / name).write_bytes(body)
    argv = ["validate", "--max-bytes", "1000", *(str(tmp_path / n) for n in bodies)]
    assert _run(argv) == 1
    lines = capsys.readouterr().out.splitlines()
    got = {Path(line.split(": ", 1)[0]).name: line.split(": ", 1)[1] for line in lines}
    assert got["good.json"] == "ok heartbeat v1"
    assert got["notjson.json"].startswith("not valid JSON")
    assert got["type.json"] == "agentId: Expected `str`, got `int`"
    assert got["missing.json"] == "status: missing required field"
    assert got["negative.json"] == "override.durationSeconds: Expected `int` >= 0"
    assert (
        got["naive.json"] == "timestamp: Expected `datetime` with a timezone component"
    )
    assert got["unknown.json"].startswith("kind: cannot tell the event kind")
    assert got["big.json"] == "over the limit of 1000 bytes"


def test_validate_with_kind_reads_stdin_and_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(SEED_OVERRIDE))
    monkeypatch.setattr("sys.stdin", stdin)
    missing = str(tmp_path / "nope.json")
    assert _run(["validate", "--kind", "heartbeat", "-", missing]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "-: agentId: missing required field"
    assert lines[1].startswith(f"{missing}: cannot read: No such file")


def test_emit_rejects_a_bad_body_before_any_broker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = _body(SEED_OVERRIDE, "override.durationSeconds", -9).decode()
    argv = ["emit", "override", "--json", body, "--bootstrap", "127.0.0.1:9"]
    assert _run(argv) == 1
    assert (
        capsys.readouterr().out
        == "--json: override.durationSeconds: Expected `int` >= 0\n"
    )
