"""Percentiles, the printed tables and the failover plot of the election suite."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PEERS = ("kazoo", "kafka-group")
SHORT = {
    "nccoord": "nccoord",
    "kazoo": "kazoo\n(ZooKeeper)",
    "kafka-group": "Kafka\nconsumer group",
    "nccoord-eager": "nccoord, eager\nread (what-if)",
}
LABELS = {
    "nccoord": "nccoord",
    "kazoo": "kazoo (ZooKeeper)",
    "kafka-group": "Kafka consumer group",
    "nccoord-eager": "nccoord, reader polled eagerly (what-if)",
}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest rank: the smallest sample with at least ``q`` of them at or below."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(samples: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(samples),
        "p50": percentile(samples, 0.50),
        "p95": percentile(samples, 0.95),
        "p99": percentile(samples, 0.99),
        "max": max(samples) if samples else None,
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def _times(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.0f}" if a / b >= 10 else f"{a / b:.1f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table, also readable as plain text."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def config_name(run: dict[str, Any]) -> str:
    return f"{run['kind']} N={run['candidates']} budget {run['budget_s']:g} s"


def latency_table(runs: list[dict[str, Any]], floor_p50: float | None) -> str:
    rows = []
    for run in runs:
        stats = summary(run["samples_s"])
        safety = run["safety"]
        rows.append(
            [
                config_name(run),
                LABELS[run["system"]],
                str(stats["n"]),
                _ms(stats["p50"]),
                _ms(stats["p95"]),
                _ms(stats["p99"]),
                _times(stats["p50"], floor_p50),
                f"{safety['overlaps']} / {safety['leader_intervals']}",
                "; ".join(run["errors"])[:60] or "",
            ]
        )
    header = [
        "run",
        "system",
        "n",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p50 / floor",
        "overlaps / leader terms",
        "errors",
    ]
    return table(header, rows)


def ratio_table(runs: list[dict[str, Any]]) -> str:
    """nccoord's percentiles divided by each peer's, per configuration."""
    by_config: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_config.setdefault(config_name(run), {})[run["system"]] = summary(
            run["samples_s"]
        )
    rows = []
    for name, systems in by_config.items():
        ours = systems.get("nccoord")
        if ours is None:
            continue
        row = [name]
        for peer in PEERS:
            theirs = systems.get(peer, {})
            row += [
                _ratio(ours["p50"], theirs.get("p50")),
                _ratio(ours["p99"], theirs.get("p99")),
            ]
        rows.append(row)
    header = ["run"]
    for peer in PEERS:
        header += [f"nccoord/{peer} p50", f"nccoord/{peer} p99"]
    return table(header, rows)


def idle_table(runs: list[dict[str, Any]]) -> str:
    rows = []
    for run in runs:
        agents = run["candidates"]
        net = run["socket_bytes_per_s_per_agent"]
        lease_rate = run.get("lease_records_per_s")
        lease_bytes = run.get("lease_bytes_per_s")
        rows.append(
            [
                LABELS[run["system"]],
                f"{agents}, {run['budget_s']:g} s, {run['window_s']:.0f} s",
                f"{statistics.fmean(run['cpu_percent_per_agent']):.2f}",
                f"{statistics.fmean(run['rss_mib_per_agent']):.1f}",
                f"{statistics.fmean(net):.0f}" if net else "- (no ss)",
                f"{sum(net):.0f}" if net else "-",
                "-" if lease_rate is None else f"{lease_rate:.2f}",
                "-" if lease_bytes is None else f"{lease_bytes:.0f}",
            ]
        )
    header = [
        "system",
        "agents, budget, window",
        "CPU % per agent",
        "RSS MiB per agent",
        "TCP B/s per agent",
        "TCP B/s per group",
        "lease records/s",
        "lease-log B/s",
    ]
    return table(header, rows)


def fold_table(runs: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(run["groups"]),
            str(run["records"]),
            f"{run['decode_fold_records_per_s']:,.0f}",
            f"{run['fold_records_per_s']:,.0f}",
            "yes" if run["states_correct"] else "NO",
        ]
        for run in runs
    ]
    header = ["groups", "records", "decode+fold rec/s", "fold rec/s", "states right"]
    return table(header, rows)


def lag_table(runs: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(run["groups"]),
            f"{run['renewals_per_s']:,.0f}",
            f"{run['records_folded']} / {run['records_sent']}",
            _ms(run["producer_late_max_s"]),
            _ms(run["lag_p50_s"]),
            _ms(run["lag_p99_s"]),
            _ms(run["lag_max_s"]),
        ]
        for run in runs
    ]
    header = [
        "groups",
        "renewals/s",
        "folded / sent",
        "producer behind schedule, max ms",
        "lag p50 ms",
        "p99 ms",
        "max ms",
    ]
    return table(header, rows)


def plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Failover and handover samples per system, one panel per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        configs.setdefault(config_name(run), []).append(run)
    columns = min(3, len(configs))
    rows = math.ceil(len(configs) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(5.2 * columns, 4.2 * rows), squeeze=False
    )
    colours = {
        "nccoord": "#1f77b4",
        "kazoo": "#2ca02c",
        "kafka-group": "#d62728",
        "nccoord-eager": "#9467bd",
    }
    for ax, (name, group) in zip(axes.flat, configs.items(), strict=False):
        data = [[s * 1000 for s in run["samples_s"]] or [math.nan] for run in group]
        ax.boxplot(data, whis=(0, 100), widths=0.5, showfliers=False)
        for x, (run, values) in enumerate(zip(group, data, strict=True), start=1):
            spread = [x + 0.18 * ((k % 7) - 3) / 3 for k in range(len(values))]
            ax.scatter(spread, values, s=14, color=colours[run["system"]], zorder=3)
        ax.set_xticks(
            range(1, len(group) + 1),
            [SHORT[r["system"]] for r in group],
            fontsize=8,
        )
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("ms until the next leader acts", fontsize=8)
        if name.startswith("handover"):
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(configs) :]:
        ax.axis("off")
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
