"""The in-memory log keeps Kafka's offset rules, trimming included."""

from __future__ import annotations

import pytest

from nccoord.errors import TransportError
from nccoord.log import MemoryLog, partition_for


def test_offsets_continue_after_trimming() -> None:
    log = MemoryLog()
    for i in range(5):
        assert log.append(0, b"k", bytes([i])) == i
    log.trim(0, 3)
    assert log.bounds(0) == (3, 5)
    reader = log.open_reader(0)
    assert reader.low == 3
    batch = reader.poll(0)
    assert [offset for offset, _, _ in batch.records] == [3, 4]
    assert batch.end == 5


def test_a_reader_that_falls_behind_retention_refuses_to_skip() -> None:
    log = MemoryLog()
    reader = log.open_reader(0)
    log.append(0, b"k", b"0")
    assert [o for o, _, _ in reader.poll(0).records] == [0]
    log.append(0, b"k", b"1")
    log.append(0, b"k", b"2")
    log.trim(0, 2)  # offset 1 was never read
    with pytest.raises(TransportError, match="skipped from 1 to 2"):
        reader.poll(0)


def test_partition_of_a_group_is_stable() -> None:
    assert partition_for("billing", 3) == partition_for("billing", 3)
    assert {partition_for(f"g{i}", 3) for i in range(50)} == {0, 1, 2}
