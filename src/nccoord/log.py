"""The small log interface the elector runs on, and its in-memory twin.

A :class:`Log` is a set of partitions; each partition is an append-only
sequence of ``(offset, key, value)`` records whose start may have been
trimmed away (retention). Kafka's adapter is :mod:`nccoord.kafka_log`. The
in-memory log here serves the deterministic simulation and the embedded
demo; it is never a stand-in for Kafka in the integration tests.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import TransportError

logger = logging.getLogger(__name__)

DeliveryCallback = Callable[[Exception | None], None]


@dataclass
class Batch:
    """What one poll of a reader returned.

    ``end`` is set when the reader has read everything the partition held at
    that moment: it is the offset the next record will get.
    """

    records: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    end: int | None = None


class Reader(Protocol):
    """Reads one partition from its first readable offset, in order."""

    @property
    def low(self) -> int:
        """The first offset that could be read when the reader opened."""
        ...

    def poll(self, timeout: float) -> Batch: ...

    def close(self) -> None: ...


class Writer(Protocol):
    """Appends records; reports each outcome through its callback."""

    def send(
        self, partition: int, key: bytes, value: bytes, on_done: DeliveryCallback
    ) -> None: ...

    def poll(self, timeout: float) -> None:
        """Serve delivery callbacks that are due."""
        ...

    def close(self) -> None: ...


class Log(Protocol):
    """Where the election records live; one topic of ``partitions``."""

    @property
    def partitions(self) -> int: ...

    def open_reader(self, partition: int) -> Reader: ...

    def open_writer(self) -> Writer: ...


def partition_for(key: str, partitions: int) -> int:
    """The partition of a key; stable across processes and languages."""
    return zlib.crc32(key.encode()) % partitions


class MemoryLog:
    """A thread-safe in-memory log with Kafka's offset semantics."""

    def __init__(self, partitions: int = 1) -> None:
        self._partitions = partitions
        self._records: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
        self._low = [0] * partitions
        self._changed = threading.Condition()

    @property
    def partitions(self) -> int:
        return self._partitions

    def append(self, partition: int, key: bytes, value: bytes) -> int:
        with self._changed:
            records = self._records[partition]
            records.append((key, value))
            self._changed.notify_all()
            return self._low[partition] + len(records) - 1

    def trim(self, partition: int, before: int) -> None:
        """Delete every record below offset ``before``, as retention would."""
        with self._changed:
            drop = max(0, before - self._low[partition])
            del self._records[partition][:drop]
            self._low[partition] += drop

    def bounds(self, partition: int) -> tuple[int, int]:
        """(first readable offset, next offset to be written)."""
        with self._changed:
            low = self._low[partition]
            return low, low + len(self._records[partition])

    def read(
        self, partition: int, start: int, timeout: float
    ) -> list[tuple[int, bytes, bytes]]:
        """Records from ``start`` on, waiting up to ``timeout`` for one."""
        with self._changed:
            if start >= self._low[partition] + len(self._records[partition]):
                self._changed.wait(timeout)
            low = self._low[partition]
            first = max(start, low)
            return [
                (first + i, key, value)
                for i, (key, value) in enumerate(
                    self._records[partition][first - low :]
                )
            ]

    def open_reader(self, partition: int) -> MemoryReader:
        return MemoryReader(self, partition)

    def open_writer(self) -> MemoryWriter:
        return MemoryWriter(self)


class MemoryReader:
    def __init__(self, log: MemoryLog, partition: int) -> None:
        self._log = log
        self._partition = partition
        self._low, _ = log.bounds(partition)
        self._next = self._low

    @property
    def low(self) -> int:
        return self._low

    def poll(self, timeout: float) -> Batch:
        records = self._log.read(self._partition, self._next, timeout)
        if records and records[0][0] > self._next:
            raise TransportError(
                f"partition {self._partition} skipped from {self._next} to "
                f"{records[0][0]}: records were trimmed before they were read"
            )
        if records:
            self._next = records[-1][0] + 1
        _, end = self._log.bounds(self._partition)
        return Batch(records, end if self._next >= end else None)

    def close(self) -> None:
        pass


class MemoryWriter:
    """Appends at once; callbacks run on the next :meth:`poll`, as in Kafka."""

    def __init__(self, log: MemoryLog) -> None:
        self._log = log
        self._done: list[DeliveryCallback] = []

    def send(
        self, partition: int, key: bytes, value: bytes, on_done: DeliveryCallback
    ) -> None:
        self._log.append(partition, key, value)
        self._done.append(on_done)

    def poll(self, timeout: float) -> None:
        done, self._done = self._done, []
        for callback in done:
            callback(None)

    def close(self) -> None:
        self.poll(0)
