"""The election benchmark suite: nccoord beside ZooKeeper and Kafka groups.

``python -m benchmarks.run --quick`` (or ``make bench``) starts a Kafka
broker and a ZooKeeper on 127.0.0.1, runs every part once, stops both, prints
the tables and writes ``benchmarks/results/election-<mode>.json``, the
printed text beside it, and the failover plot
(``docs/benchmarks-failover-<mode>.png``). Without ``--quick`` it runs the
full plan: more repetitions, a 60 s idle window.

Parts: the physical floor (:mod:`benchmarks.floor`), failover and handover
with their safety counts, idle cost (:mod:`benchmarks.election`), fold
throughput and follower lag (:mod:`benchmarks.scale`). Everything is bounded
in count and time and stops by itself.

The machine is shared and small, so absolute times are noisy; the figures to
quote are the ratios between systems measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition, libversion
from confluent_kafka.admin import AdminClient, NewTopic

from nccoord import broker
from nccoord.kafka_log import consumer_config
from nccoord.log import partition_for
from nccoord.topics import TopicNames, ensure_topics

from . import election, floor, report, scale, zookeeper

REPO = Path(__file__).resolve().parents[1]
PREFIX = "bench-"
GROUP_TOPIC = "bench-group-election"
FLOOR_TOPIC = "bench-floor"

Trials = tuple[int, float, int]  # candidates, budget in seconds, repetitions


@dataclass(frozen=True)
class Plan:
    failover: tuple[Trials, ...]
    handover: tuple[Trials, ...]
    idle_window: float
    floor_round_trips: int
    fold_records: int
    lag_seconds: float
    groups: tuple[int, ...] = (100, 1000, 10000)


PLANS = {
    "quick": Plan(
        failover=((3, 2.0, 8), (10, 2.0, 6), (3, 6.0, 4), (10, 6.0, 3)),
        handover=((3, 2.0, 8),),
        idle_window=10.0,
        floor_round_trips=200,
        fold_records=100_000,
        lag_seconds=5.0,
    ),
    "full": Plan(
        failover=((3, 2.0, 40), (10, 2.0, 30), (3, 6.0, 20), (10, 6.0, 15)),
        handover=((3, 2.0, 40), (3, 6.0, 20)),
        idle_window=60.0,
        floor_round_trips=1000,
        fold_records=500_000,
        lag_seconds=20.0,
    ),
}


def say(text: str = "") -> None:
    print(text, flush=True)


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(total_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kafka": broker.KAFKA_VERSION,
        "zookeeper": zookeeper.ZOOKEEPER_VERSION,
        "confluent_kafka": metadata.version("confluent-kafka"),
        "librdkafka": libversion()[0],
        "kazoo": metadata.version("kazoo"),
        "load_average_at_start": os.getloadavg(),
    }


def create_topics(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    ensure_topics(admin, TopicNames(PREFIX))
    wanted = [NewTopic(GROUP_TOPIC, 1, 1), NewTopic(FLOOR_TOPIC, 1, 1)]
    for future in admin.create_topics(wanted).values():
        future.result(30)
    time.sleep(1.0)  # let the new partitions' leaders settle


def lease_records(bootstrap: str) -> Callable[[str], tuple[int, int]]:
    """A counter of one group's records (and bytes) in the bench lease log."""
    topic = TopicNames(PREFIX).lease

    def count(group: str) -> tuple[int, int]:
        consumer = Consumer(consumer_config(bootstrap))
        try:
            part = TopicPartition(topic, partition_for(group, 3), 0)
            _, high = consumer.get_watermark_offsets(part, timeout=10, cached=False)
            consumer.assign([part])
            records = size = 0
            position, stop_at = 0, time.monotonic() + 30
            key = group.encode()
            while position < high and time.monotonic() < stop_at:
                message = consumer.poll(0.5)
                if message is None or message.error() is not None:
                    continue
                position = (message.offset() or 0) + 1
                if message.key() == key:
                    records += 1
                    size += len(message.value() or b"") + len(key)
            return records, size
        finally:
            consumer.close()

    return count


class Suite:
    def __init__(self, plan: Plan, setup: election.Setup, seed: int) -> None:
        self.plan = plan
        self.setup = setup
        self.rng = random.Random(seed)
        self.results: dict[str, Any] = {"seed": seed}

    def floor(self) -> None:
        say("floor: produce-then-consume round trips …")
        samples = floor.round_trips(
            self.setup.bootstrap, FLOOR_TOPIC, self.plan.floor_round_trips
        )
        self.results["floor"] = {"samples_s": samples, **report.summary(samples)}

    def trials(self, kind: str, plans: tuple[Trials, ...], systems: tuple[str, ...]):
        runs = self.results.setdefault(kind, [])
        for n, budget, repeats in plans:
            for system in systems:
                say(f"{kind}: {system}, {n} candidates, {budget:g} s, {repeats} times")
                run = election.run_trials(
                    system, n, budget, self.setup, self.rng, kind=kind, repeats=repeats
                )
                runs.append(run)
                say(
                    f"  p50 {report._ms(report.percentile(run['samples_s'], 0.5))} ms"
                    f", overlaps {run['safety']['overlaps']}, {run['wall_s']:.0f} s"
                )

    def idle(self) -> None:
        runs = self.results.setdefault("idle", [])
        counter = lease_records(self.setup.bootstrap)
        for system in election.SYSTEMS:
            say(f"idle: {system}, 3 candidates, {self.plan.idle_window:g} s …")
            runs.append(
                election.idle_cost(
                    system,
                    3,
                    2.0,
                    self.plan.idle_window,
                    self.setup,
                    self.rng,
                    lease_records=counter if system == "nccoord" else None,
                )
            )

    def scale(self) -> None:
        say("scale: fold throughput …")
        self.results["fold"] = [
            scale.fold_throughput(groups, self.plan.fold_records)
            for groups in self.plan.groups
        ]
        lags = self.results.setdefault("follower_lag", [])
        for groups in self.plan.groups:
            say(f"scale: follower lag, {groups} groups …")
            topic = f"bench-scale-{groups}"
            scale.create_topic(self.setup.bootstrap, topic)
            lags.append(
                scale.follower_lag(
                    self.setup.bootstrap, topic, groups, 0.5, self.plan.lag_seconds
                )
            )


def render(results: dict[str, Any], mode: str) -> str:
    floor_stats = results["floor"]
    host = results["machine"]
    parts = [
        f"## Election benchmarks ({mode} mode)",
        "",
        f"Machine: {host['nproc']} cores, {host['cpu_model']}, "
        f"{host['memory_gib']} GiB; load average at start "
        f"{host['load_average_at_start'][0]:.2f}, at end "
        f"{results['load_average_at_end'][0]:.2f}. "
        f"Kafka {host['kafka']}, ZooKeeper {host['zookeeper']}, "
        f"kazoo {host['kazoo']}, confluent-kafka {host['confluent_kafka']}. "
        f"Seed {results['seed']}. Wall time {results['wall_s']:.0f} s.",
        "",
        "### Ratios (nccoord ÷ peer; below 1 means nccoord is faster)",
        "",
        report.ratio_table(results["failover"] + results["handover"]),
        "",
        f"### Physical floor: {floor_stats['n']} produce-then-consume round "
        f"trips, p50 {report._ms(floor_stats['p50'])} ms, "
        f"p99 {report._ms(floor_stats['p99'])} ms",
        "",
        "### Failover after SIGKILL of the leader, and safety",
        "",
        report.latency_table(results["failover"], floor_stats["p50"]),
        "",
        "### Graceful handover (the leader resigns)",
        "",
        report.latency_table(results["handover"], floor_stats["p50"]),
        "",
        "### Idle cost",
        "",
        report.idle_table(results["idle"]),
        "",
        "### Scale: fold throughput of the pure protocol",
        "",
        report.fold_table(results["fold"]),
        "",
        "### Scale: follower lag behind the log (renewals every 0.5 s per group)",
        "",
        report.lag_table(results["follower_lag"]),
    ]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--quick", action="store_true", help="the short plan")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    started = time.monotonic()
    results: dict[str, Any] = {"mode": mode, "machine": machine()}
    log_dir = Path(tempfile.mkdtemp(prefix="nccoord-bench-"))

    say(f"starting Kafka {broker.KAFKA_VERSION} and ZooKeeper on 127.0.0.1 …")
    kafka = broker.start_broker(backend="jars", progress=lambda _: None)
    try:
        zk = zookeeper.start_zookeeper()
        try:
            create_topics(kafka.bootstrap)
            setup = election.Setup(
                kafka.bootstrap, zk.hosts, PREFIX, GROUP_TOPIC, log_dir
            )
            suite = Suite(plan, setup, seed)
            suite.floor()
            suite.trials("failover", plan.failover, election.SYSTEMS)
            suite.trials("handover", plan.handover, election.SYSTEMS)
            suite.trials("handover", plan.handover[:1], ("nccoord-eager",))
            suite.idle()
            suite.scale()
            results.update(suite.results)
        finally:
            zk.stop()
    finally:
        kafka.stop()

    results["load_average_at_end"] = os.getloadavg()
    results["wall_s"] = time.monotonic() - started
    text = render(results, mode)
    say()
    say(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"election-{mode}.json").write_text(json.dumps(results, indent=1))
    (args.out / f"election-{mode}.txt").write_text(text)
    picture = args.plot or REPO / "docs" / f"benchmarks-failover-{mode}.png"
    report.plot(
        results["failover"] + results["handover"],
        picture,
        f"nccoord vs kazoo vs Kafka consumer group ({mode} mode, "
        f"{results['machine']['nproc']} cores)",
    )
    say(f"wrote {args.out}/election-{mode}.json and {picture}")
    failed = any(run["errors"] for run in results["failover"] + results["handover"])
    if failed:
        say(f"some trials failed; agent logs kept in {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
