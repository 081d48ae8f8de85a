"""The cluster view and the metrics, without a broker: records in, panels out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console

from nccoord import headers as hdr
from nccoord import lease, live, topics
from nccoord.events import (
    Broadcast,
    Event,
    Heartbeat,
    Override,
    OverrideRevoke,
    OverrideSpec,
    StatusUpdate,
)
from nccoord.lease import Claim, LeaseState, Release, Renew
from nccoord.metrics import Metrics
from nccoord.monitor import ClusterView

T0 = datetime(2025, 7, 26, 0, 10, tzinfo=UTC)


def claim(group: str, who: str, term: int, prev_seq: int = 0) -> bytes:
    record = Claim(
        group=group,
        term=term,
        incarnation=f"{who}-i",
        candidate=who,
        prev_seq=prev_seq,
        lease=2.0,
    )
    return lease.encode(record)


def renew(group: str, who: str, term: int, seq: int) -> bytes:
    record = Renew(group=group, term=term, incarnation=f"{who}-i", holder=who, seq=seq)
    return lease.encode(record)


def release(group: str, who: str, term: int) -> bytes:
    return lease.encode(
        Release(group=group, term=term, incarnation=f"{who}-i", holder=who)
    )


class Feed:
    """Feeds a view as a follower would: offsets, sequence numbers, clocks."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.offset = 0
        self.sequence = 0
        view.lease_partition(0, 0)

    def lease(self, value: bytes, now: float) -> None:
        self.view.lease_record(0, self.offset, b"", value, now)
        self.offset += 1

    def event(
        self, event: Event, now: float, wall: datetime = T0, seq: int | None = None
    ) -> None:
        self.sequence += 1
        meta = hdr.EventMeta(
            id=f"id-{self.sequence}",
            type="x",
            source="/nccoord/test/1",
            time=wall,
            sequence=seq if seq is not None else self.sequence,
        )
        self.view.event(event.TOPIC, 0, event, meta, now, wall)


def test_groups_show_holder_term_and_the_lease_a_challenger_would_count() -> None:
    view = ClusterView()
    feed = Feed(view)
    feed.lease(claim("g", "a", 1), now=10.0)
    feed.lease(renew("g", "a", 1, 1), now=10.5)
    row = view.snapshot(now=11.0).groups[0]
    assert (row.group, row.leader, row.term, row.lease) == ("g", "a", 1, 2.0)
    assert row.lease_left == 1.5  # counted from reading the Renew at 10.5
    assert view.snapshot(now=13.0).groups[0].lease_left == 0.0
    feed.lease(release("g", "a", 1), now=13.1)
    row = view.snapshot(now=13.2).groups[0]
    assert row.leader is None and row.lease_left is None


def test_a_losing_claim_changes_nothing_and_a_takeover_is_a_failover() -> None:
    metrics = Metrics()
    view = ClusterView(metrics=metrics)
    feed = Feed(view)
    view.lease_caught_up(0)  # live from here: elections count
    feed.lease(claim("g", "a", 1), now=1.0)
    feed.lease(claim("g", "b", 1), now=1.1)  # lost the compare-and-set
    assert view.snapshot(now=1.2).leader_of("g") == "a"
    feed.lease(claim("g", "b", 2), now=4.0)
    snap = view.snapshot(now=4.1)
    assert snap.leader_of("g") == "b"
    assert [(c.kind, c.agent, c.term) for c in snap.changes] == [
        ("elected", "b", 2),
        ("revoked", "a", 1),
        ("elected", "a", 1),
    ]
    value = metrics.registry.get_sample_value
    assert value("nccoord_elections_total", {"group": "g"}) == 2
    assert value("nccoord_failovers_total", {"group": "g"}) == 1
    assert value("nccoord_term", {"group": "g"}) == 2
    assert value("nccoord_leader", {"group": "g", "agent": "b"}) == 1
    assert value("nccoord_leader", {"group": "g", "agent": "a"}) is None


def test_history_read_while_catching_up_sets_gauges_but_counts_nothing() -> None:
    metrics = Metrics()
    view = ClusterView(metrics=metrics)
    feed = Feed(view)
    feed.lease(claim("g", "a", 1), now=1.0)
    feed.lease(claim("g", "b", 2), now=1.0)
    value = metrics.registry.get_sample_value
    assert value("nccoord_term", {"group": "g"}) == 2
    assert value("nccoord_elections_total", {"group": "g"}) == 0
    view.lease_caught_up(0)
    assert view.snapshot(now=1.0).caught_up
    feed.lease(release("g", "b", 2), now=2.0)
    feed.lease(claim("g", "c", 3, prev_seq=0), now=2.1)
    assert value("nccoord_elections_total", {"group": "g"}) == 1
    # A hand-over after a release is an election, not a failover.
    assert value("nccoord_failovers_total", {"group": "g"}) == 0


def test_agents_go_suspect_then_dead_without_heartbeats() -> None:
    view = ClusterView()
    feed = Feed(view)
    feed.event(
        StatusUpdate(agent_id="a", timestamp=T0, kind="registration", group="g"), 0.0
    )
    feed.event(
        Heartbeat(agent_id="a", timestamp=T0, status="healthy", interval_seconds=1),
        now=100.0,
        wall=T0,
    )
    states = [view.snapshot(now=100.0 + dt).agents[0].state for dt in (1, 3.5, 6.5)]
    assert states == ["alive", "suspect", "dead"]
    row = view.snapshot(now=101.0).agents[0]
    assert (row.agent, row.group, row.status, row.last_heartbeat) == (
        "a",
        "g",
        "healthy",
        1.0,
    )


def test_an_old_heartbeat_read_while_catching_up_is_aged_by_its_timestamp() -> None:
    view = ClusterView()
    Feed(view).event(
        Heartbeat(agent_id="a", timestamp=T0, status="ok"),
        now=50.0,
        wall=T0 + timedelta(seconds=30),
    )
    row = view.snapshot(now=50.0).agents[0]
    assert row.state == "dead" and row.last_heartbeat == 30.0


def override(oid: str, start: datetime, seconds: int) -> Override:
    spec = OverrideSpec(type="threshold", new_value=0.85, duration_seconds=seconds)
    return Override(target="s", timestamp=start, override=spec, override_id=oid)


def test_overrides_in_force_until_expiry_or_revoke() -> None:
    metrics = Metrics()
    view = ClusterView(metrics=metrics)
    feed = Feed(view)
    feed.event(override("o1", T0, 120), now=0.0)
    feed.event(override("o2", T0, 120), now=0.0)
    feed.event(override("late", T0 - timedelta(seconds=600), 120), now=0.0)
    feed.event(OverrideRevoke(target="s", timestamp=T0, override_id="o2"), now=0.0)
    rows = view.snapshot(now=0.0, wall=T0 + timedelta(seconds=20)).overrides
    assert [(r.override_id, r.time_left, r.value) for r in rows] == [("o1", 100, 0.85)]
    assert view.snapshot(now=0, wall=T0 + timedelta(seconds=121)).overrides == ()
    assert metrics.registry.get_sample_value("nccoord_overrides_in_force") == 0


def result(round: int, term: int, value: str) -> Broadcast:
    return Broadcast(
        kind="consensus-result",
        timestamp=T0,
        group="g",
        round=round,
        term=term,
        value=value,
        voters=["a", "b"],
    )


def test_results_first_per_round_and_no_lower_term() -> None:
    view = ClusterView()
    feed = Feed(view)
    feed.event(result(1, 2, "x"), now=0.0)
    feed.event(result(1, 3, "y"), now=0.0)  # round 1 was decided
    feed.event(result(2, 1, "z"), now=0.0)  # a deposed leader's term
    feed.event(result(2, 3, "w"), now=0.0)
    assert [(r.round, r.value) for r in view.snapshot(now=0).results] == [
        (2, "w"),
        (1, "x"),
    ]


def test_repeats_are_counted_and_dropped() -> None:
    metrics = Metrics()
    view = ClusterView(metrics=metrics)
    feed = Feed(view)
    feed.event(override("o1", T0, 120), now=0.0, seq=7)
    feed.event(OverrideRevoke(target="s", timestamp=T0, override_id="o1"), 0.0, seq=7)
    assert len(view.snapshot(now=0, wall=T0).overrides) == 1
    assert view.snapshot(now=0).counts["duplicates"] == 1
    value = metrics.registry.get_sample_value
    labels = {"topic": topics.OVERRIDE}
    assert value("nccoord_events_consumed_total", labels) == 2
    assert value("nccoord_events_duplicate_total", labels) == 1


def test_every_metric_name_is_exposed() -> None:
    metrics = Metrics()
    metrics.leadership("g", LeaseState(), LeaseState(term=1, holder="a"), count=True)
    metrics.renewed("g", 0.004)
    text = metrics.exposition().decode()
    for name in EXPECTED_NAMES:
        assert f"\n{name}" in text, name


EXPECTED_NAMES = (
    "nccoord_leader{",
    "nccoord_term{",
    "nccoord_elections_total{",
    "nccoord_failovers_total",
    "nccoord_lease_renew_latency_seconds_bucket{",
    "nccoord_events_consumed_total{",
    "nccoord_events_duplicate_total{",
    "nccoord_deadletter_total{",
    "nccoord_overrides_in_force ",
)


def test_live_view_renders_every_panel() -> None:
    view = ClusterView()
    feed = Feed(view)
    feed.lease(claim("billing", "worker-1", 1), now=0.0)
    feed.event(Heartbeat(agent_id="worker-1", timestamp=T0, status="healthy"), 0.0)
    feed.event(override("o1", T0, 120), now=0.0)
    feed.event(result(4, 1, "blue"), now=0.0)
    console = Console(width=140, record=True, color_system=None)
    console.print(live.render(view.snapshot(now=0.5, wall=T0), "test"))
    text = console.export_text()
    for expected in ("billing", "worker-1", "1.5s of 2s", "alive", "o1", "'blue'"):
        assert expected in text, expected
