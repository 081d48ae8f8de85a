"""Prometheus metrics: leaders, terms, elections, renewals, events, overrides.

:class:`Metrics` holds one process's series in a registry of its own, so
several can live in one process (tests, the demo) without clashing. Feed it
from the places that know: an elector (:meth:`Metrics.instrument`), an
observer of the logs (:class:`nccoord.monitor.ClusterView` takes one), or by
hand; expose it with :meth:`Metrics.serve` or inside another web app with
:meth:`Metrics.exposition`.

=======================================  =========  ==========================
name                                     type       labels
=======================================  =========  ==========================
``nccoord_leader``                       gauge      group, agent (1 = leads)
``nccoord_term``                         gauge      group
``nccoord_elections_total``              counter    group
``nccoord_failovers_total``              counter    group
``nccoord_lease_renew_latency_seconds``  histogram  group
``nccoord_events_consumed_total``        counter    topic
``nccoord_events_duplicate_total``       counter    topic
``nccoord_deadletter_total``             counter    topic (of the original)
``nccoord_overrides_in_force``           gauge
=======================================  =========  ==========================

A *failover* is an election that took the term from a holder that had not
released it (crashed, cut off, expired); a hand-over after a resign is an
election but not a failover.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from . import topics
from .errors import ConfigError
from .lease import LeaseRecord, LeaseState, Renew

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .elector import Elector

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The content type of :meth:`Metrics.exposition`."""

EVENT_TOPICS = (
    topics.CONTROL,
    topics.HEARTBEAT,
    topics.STATUS,
    topics.BROADCAST,
    topics.OVERRIDE,
)

RENEW_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class Metrics:
    """The nccoord series of one process (see the module text for names)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._leaders: dict[str, str] = {}
        self._lock = threading.Lock()
        reg = self.registry
        self.leader = Gauge(
            "nccoord_leader",
            "1 for the agent the lease log shows leading the group",
            ["group", "agent"],
            registry=reg,
        )
        self.term = Gauge(
            "nccoord_term", "The group's current term", ["group"], registry=reg
        )
        self.elections = Counter(
            "nccoord_elections",
            "Terms won, as read from the log",
            ["group"],
            registry=reg,
        )
        self.failovers = Counter(
            "nccoord_failovers",
            "Terms won from a holder that had not released its term",
            ["group"],
            registry=reg,
        )
        self.renew_latency = Histogram(
            "nccoord_lease_renew_latency_seconds",
            "Time from sending a lease Renew to the broker's acknowledgement",
            ["group"],
            buckets=RENEW_BUCKETS,
            registry=reg,
        )
        self.events_consumed = Counter(
            "nccoord_events_consumed",
            "Events read and decoded, repeats included",
            ["topic"],
            registry=reg,
        )
        self.events_duplicate = Counter(
            "nccoord_events_duplicate",
            "Events dropped as repeats of one already read",
            ["topic"],
            registry=reg,
        )
        self.deadletter = Counter(
            "nccoord_deadletter",
            "Records read from system-deadletter, by the topic they came from",
            ["topic"],
            registry=reg,
        )
        self.overrides_in_force = Gauge(
            "nccoord_overrides_in_force",
            "Overrides that have started, not expired and not been revoked",
            registry=reg,
        )
        for base in EVENT_TOPICS:
            # Zero samples from the start, so rate() and absent() behave.
            self.events_consumed.labels(base)
            self.events_duplicate.labels(base)
            self.deadletter.labels(base)

    # -- leadership ------------------------------------------------------------

    def leadership(
        self, group: str, before: LeaseState | None, after: LeaseState, *, count: bool
    ) -> None:
        """Record one step of a group's fold.

        The gauges follow every step; elections and failovers are counted
        only with ``count`` (not while replaying history a reader finds when
        it starts).
        """
        self.term.labels(group).set(after.term)
        self._set_leader(group, after.holder)
        # Series at zero from the first sight of a group, so they can be
        # graphed and alerted on before the first failover.
        elections, failovers = (
            self.elections.labels(group),
            self.failovers.labels(group),
        )
        if not count or before is None or after.term == before.term:
            return
        if after.holder is not None:
            elections.inc()
            if before.holder is not None:
                failovers.inc()

    def _set_leader(self, group: str, holder: str | None) -> None:
        with self._lock:
            previous = self._leaders.get(group)
            if previous == holder:
                return
            if previous is not None:
                self.leader.remove(group, previous)
            if holder is None:
                self._leaders.pop(group, None)
            else:
                self._leaders[group] = holder
                self.leader.labels(group, holder).set(1)

    def renewed(self, group: str, seconds: float) -> None:
        """One Renew was acknowledged ``seconds`` after it was sent."""
        self.renew_latency.labels(group).observe(seconds)

    def instrument(self, elector: Elector) -> None:
        """Follow an elector: leader and term gauges, elections, renew latency."""
        group = elector.group

        def changed(before: LeaseState | None, after: LeaseState) -> None:
            self.leadership(group, before, after, count=elector.caught_up)

        def sent(record: LeaseRecord, seconds: float, error: Exception | None) -> None:
            if error is None and isinstance(record, Renew):
                self.renewed(group, seconds)

        elector.on_change(changed)
        elector.on_sent(sent)

    # -- events ------------------------------------------------------------------

    def consumed(self, topic: str, *, duplicate: bool = False) -> None:
        """One event of a system topic (base name) was read."""
        self.events_consumed.labels(topic).inc()
        if duplicate:
            self.events_duplicate.labels(topic).inc()

    def dead_lettered(self, topic: str) -> None:
        """One record of ``topic`` was found on the dead-letter topic."""
        self.deadletter.labels(topic).inc()

    def count_overrides(self, in_force: Callable[[], float]) -> None:
        """Read the number of overrides in force from ``in_force`` at scrape time."""
        self.overrides_in_force.set_function(in_force)

    # -- exposition --------------------------------------------------------------

    def exposition(self) -> bytes:
        """The series in Prometheus' text format (content type :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def names(self) -> Iterable[str]:
        """The names of the series this registry exposes now (with suffixes)."""
        for family in self.registry.collect():
            for sample in family.samples:
                yield sample.name

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` on ``host:port`` (loopback; 0 picks a free port)."""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"metrics are served on loopback only, not {host}")
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}): "
                "pick another port (0 picks a free one)"
            ) from exc
        bound = int(server.server_port)
        logger.info("metrics at http://%s:%d/metrics", host, bound)
        return MetricsServer(host, bound, server, thread)
