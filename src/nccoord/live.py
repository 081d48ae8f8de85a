"""The live terminal view of ``nccoord watch``: four panels redrawn in place.

:func:`render` turns a :class:`~nccoord.monitor.Snapshot` into rich tables
(groups, agents, overrides in force, consensus results, recent role
changes); :func:`run` redraws it a few times a second until a deadline or
Ctrl-C.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .monitor import Snapshot

logger = logging.getLogger(__name__)

STATE_STYLES = {"alive": "green", "suspect": "yellow", "dead": "red"}


def render(snapshot: Snapshot, source: str = "") -> RenderableType:
    """The whole view of one snapshot."""
    head = Text(f"nccoord watch {source}  {snapshot.at}", style="bold")
    if not snapshot.caught_up:
        head.append("  (catching up…)", style="yellow")
    counts = snapshot.counts
    foot = Text(
        f"events {counts['events']}  repeats {counts['duplicates']}  "
        f"invalid {counts['invalid']}  dead letters {counts['dead_letters']}  "
        f"lease records {counts['lease_records']}",
        style="dim",
    )
    return Group(
        head,
        _groups(snapshot),
        _agents(snapshot),
        _overrides(snapshot),
        _results(snapshot),
        _changes(snapshot),
        foot,
    )


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for column in columns:
        table.add_column(column)
    return table


def _groups(snapshot: Snapshot) -> Table:
    table = _table("groups", "group", "leader", "term", "lease left")
    for row in snapshot.groups:
        leader = Text(row.leader, style="bold green") if row.leader else Text("none")
        if row.lease_left is None:
            left = "-"
        elif row.lease_left <= 0:
            left = "run out"
        else:
            left = f"{row.lease_left:.1f}s of {row.lease:g}s"
        table.add_row(row.group, leader, str(row.term), left)
    return table


def _agents(snapshot: Snapshot) -> Table:
    table = _table("agents", "agent", "state", "status", "last heartbeat", "group")
    for row in snapshot.agents:
        seen = "-" if row.last_heartbeat is None else f"{row.last_heartbeat:.1f}s ago"
        state = Text(row.state, style=STATE_STYLES.get(row.state, ""))
        table.add_row(row.agent, state, row.status or "-", seen, row.group or "-")
    return table


def _overrides(snapshot: Snapshot) -> Table:
    table = _table(
        "overrides in force", "target", "type", "value", "time left", "id", "signed"
    )
    for row in snapshot.overrides:
        table.add_row(
            row.target,
            row.type,
            repr(row.value),
            f"{row.time_left:.0f}s",
            row.override_id,
            "yes" if row.signed else "no",
        )
    return table


def _results(snapshot: Snapshot) -> Table:
    table = _table("consensus results", "group", "round", "term", "value", "voters")
    for row in snapshot.results[:10]:
        table.add_row(
            row.group,
            str(row.round),
            str(row.term),
            repr(row.value),
            ", ".join(row.voters),
        )
    return table


def _changes(snapshot: Snapshot) -> Table:
    table = _table("role changes", "seen at", "group", "agent", "change", "term")
    for row in snapshot.changes[:8]:
        table.add_row(row.at, row.group, row.agent, row.kind, str(row.term))
    return table


def run(
    take: Callable[[], Snapshot],
    *,
    source: str = "",
    duration: float | None = None,
    console: Console | None = None,
    refresh: float = 4.0,
) -> Snapshot:
    """Redraw the view until ``duration`` passes (or Ctrl-C); return the last."""
    console = console or Console()
    deadline = None if duration is None else time.monotonic() + duration
    snapshot = take()
    with Live(
        render(snapshot, source),
        console=console,
        refresh_per_second=refresh,
        screen=False,
    ) as live:
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(1 / refresh)
                snapshot = take()
                live.update(render(snapshot, source))
        except KeyboardInterrupt:
            logger.debug("watch interrupted")
    return snapshot
