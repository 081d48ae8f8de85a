"""Broker-enforced fencing of a leader's writes, the second layer of safety.

Every candidate of a group writes as leader through a transactional producer
whose ``transactional.id`` is the same for the whole group. A candidate
calls ``init_transactions`` only after the log has shown it won the current
term (:attr:`Elector.term` is set only then), so the broker gives the new
leader a newer producer epoch and refuses the old leader's producer from then
on: a paused, deposed leader that wakes up cannot commit, whatever its clock
says. Readers of these writes use ``isolation.level=read_committed``.

Every write carries the term as the ``nccoord-term`` header; readers should
also refuse a term lower than one they have seen.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from .elector import Elector
from .errors import FencedError, NccoordError, TransportError
from .kafka_log import producer_config

logger = logging.getLogger(__name__)

TERM_HEADER = "nccoord-term"
GROUP_HEADER = "nccoord-group"


class NotLeaderError(NccoordError):
    """A write that only the leader may make was attempted by a non-leader."""


def transactional_id(group: str, prefix: str = "") -> str:
    """The one ``transactional.id`` shared by every candidate of a group."""
    return f"{prefix}nccoord-leader-{group}"


class FencedProducer:
    """Writes as the group's leader, fenced at the broker.

    ``send`` refuses to write unless the elector leads now; it then writes the
    records in one transaction stamped with the term. If the broker fences
    the producer (a newer leader called ``init_transactions``), the elector is
    told to step down and :class:`~nccoord.errors.FencedError` is raised.
    """

    def __init__(
        self,
        elector: Elector,
        bootstrap: str,
        *,
        transactional_id_prefix: str = "",
        transaction_timeout_ms: int = 10_000,
        client_config: Mapping[str, Any] | None = None,
        check_deadline: bool = True,
    ) -> None:
        self.elector = elector
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id(elector.group, transactional_id_prefix)
        self.transaction_timeout_ms = transaction_timeout_ms
        self.client_config = dict(client_config or {})
        # Turning the local check off leaves the broker as the only fence;
        # the fault tests do that to show the broker refusing a stale leader.
        self.check_deadline = check_deadline
        self._producer: Producer | None = None
        self._term: int | None = None

    def send(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes]],
        headers: Mapping[str, bytes] | None = None,
        partition: int | None = None,
    ) -> int:
        """Write ``(key, value)`` records in one transaction; return the term.

        ``headers`` go on every record, next to the term; ``partition``, if
        given, is where every record goes (else the key decides).
        """
        term = self._leader_term()
        producer = self._producer_for(term)
        stamp = {**(headers or {}), TERM_HEADER: str(term).encode()}
        stamp[GROUP_HEADER] = self.elector.group.encode()
        try:
            producer.begin_transaction()
            for key, value in records:
                if partition is None:
                    producer.produce(topic, value, key, headers=list(stamp.items()))
                else:
                    producer.produce(
                        topic, value, key, partition, headers=list(stamp.items())
                    )
            producer.commit_transaction()
        except KafkaException as exc:
            self._failed(exc.args[0], term)
        return term

    def open(self) -> int:
        """Take the group's producer for the current term now; return the term.

        This fences every older leader's producer and ends its open
        transaction, so nothing of an older term commits after it returns.
        """
        term = self._leader_term()
        self._producer_for(term)
        return term

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
        self._producer = None
        self._term = None

    def _leader_term(self) -> int:
        term = self.elector.term
        if term is None and not self.check_deadline:
            # Keep writing with the producer of the term we led: from here
            # only the broker can stop us.
            term = self._term
        if term is None:
            raise NotLeaderError(
                f"{self.elector.candidate_id} does not lead {self.elector.group}"
            )
        return term

    def _producer_for(self, term: int) -> Producer:
        if self._producer is not None and self._term == term:
            return self._producer
        self.close()
        config = producer_config(
            self.bootstrap,
            self.client_config,
            **{
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": self.transaction_timeout_ms,
            },
        )
        producer = Producer(config)
        try:
            # Called only now that the log shows this candidate won `term`:
            # fencing follows the order of these calls, not of terms.
            producer.init_transactions(30)
        except KafkaException as exc:
            raise TransportError(
                f"cannot take the leader's producer of {self.elector.group}: {exc}"
            ) from exc
        logger.info(
            "group %s: %s holds the fenced producer for term %d",
            self.elector.group,
            self.elector.candidate_id,
            term,
        )
        self._producer, self._term = producer, term
        return producer

    def _failed(self, error: KafkaError, term: int) -> None:
        fenced = error.code() in (
            KafkaError._FENCED,
            KafkaError.PRODUCER_FENCED,
            KafkaError.INVALID_PRODUCER_EPOCH,
        )
        if fenced or error.fatal():
            self._producer = None
            self._term = None
            why = f"write of term {term} refused by the broker: {error.str()}"
            logger.warning("group %s: %s", self.elector.group, why)
            with contextlib.suppress(NccoordError):  # the elector already stopped
                self.elector.step_down(why)
            raise FencedError(why)
        if error.txn_requires_abort() and self._producer is not None:
            self._producer.abort_transaction(10)
        raise TransportError(f"leader write of term {term} failed: {error.str()}")
