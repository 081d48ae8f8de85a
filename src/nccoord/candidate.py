"""One candidate of one election group, as a state machine without I/O.

The caller feeds it what happened (records read from the lease log, reaching
the end of the partition, a write whose outcome is unknown) together with the
current reading of a local monotonic clock, and carries out the actions it
returns: records to send, and elected/revoked notices for the application.
The same object runs over Kafka (:mod:`nccoord.elector`) and in the
deterministic simulation, where only the log and the clock differ.

Timing, on the candidate's own clock (``d`` is the drift bound, ``m`` the
margin, ``L`` the lease recorded in the log):

- a leader acts until ``t_sent + L * (1 - d) - m``, where ``t_sent`` is when
  it sent its last Renew that counted (or its winning Claim); it stops at
  that deadline whether or not the log has answered;
- a challenger claims a held term only once ``L * (1 + d) + m`` has passed
  since it *read* the holder's latest counted record; a term with no holder
  it claims at once.

A challenger reads a record only after its holder sent it, so the holder's
deadline falls before any challenger may send its Claim.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from .errors import ConfigError
from .lease import (
    NO_OFFSET,
    Claim,
    GroupView,
    LeaseRecord,
    LeaseState,
    Release,
    Renew,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """Lease length and the bounds the safety argument rests on.

    ``drift`` bounds how much faster or slower one candidate's clock may run
    than another's (0.05 is 5 %); ``margin`` covers the time between the
    elector's check and the application's action. Renewals go out every
    ``renew_every`` seconds (a quarter of the lease unless set).
    """

    lease: float = 2.0
    drift: float = 0.05
    margin: float = 0.1
    renew_every: float | None = None

    def __post_init__(self) -> None:
        for name in ("lease", "drift", "margin", "renew_every"):
            value = getattr(self, name)
            if value is None and name == "renew_every":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name}: must be a number of seconds, not {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{name}: must be finite, not {value!r}")
        if self.lease <= 0:
            raise ConfigError("lease: must be positive")
        if not 0 <= self.drift < 1:
            raise ConfigError("drift: must be in [0, 1)")
        if self.margin < 0:
            raise ConfigError("margin: must not be negative")
        if self.budget(self.lease) <= 0:
            raise ConfigError(
                f"margin: {self.margin:g}s leaves a {self.lease:g}s lease no time "
                "to lead; use a longer lease or a smaller margin"
            )
        if not 0 < self.renew_interval < self.budget(self.lease):
            raise ConfigError(
                "renew_every: must be positive and shorter than what the lease "
                f"leaves after drift and margin ({self.budget(self.lease):g}s)"
            )

    @property
    def renew_interval(self) -> float:
        return self.renew_every if self.renew_every is not None else self.lease / 4

    def budget(self, lease: float) -> float:
        """How long a leader acts after sending a record that counted."""
        return lease * (1 - self.drift) - self.margin

    def patience(self, lease: float) -> float:
        """How long a challenger waits after reading the holder's record."""
        return lease * (1 + self.drift) + self.margin


@dataclass(frozen=True)
class Send:
    """Append this record to the group's partition of the lease log."""

    record: LeaseRecord


@dataclass(frozen=True)
class Elected:
    """This candidate leads ``term`` and may act until ``deadline``.

    ``previous`` is the state the winning Claim replaced: who held the term
    before (``None`` if it had been released or never held) and which term.
    """

    term: int
    deadline: float
    previous: LeaseState | None = None


@dataclass(frozen=True)
class Revoked:
    """This candidate stopped leading ``term``.

    ``reason`` is one of ``expired`` (its deadline passed before a renewal
    counted), ``resigned``, ``superseded`` (the log shows another holder),
    ``unknown-outcome`` (a write whose fate it cannot know), ``fenced`` (the
    broker refused its write for a newer leader) or ``closed``.
    """

    term: int
    reason: str


@dataclass(frozen=True)
class Resync:
    """Rebuild the producer, read the log again, then call ``restart``."""

    reason: str


Action = Send | Elected | Revoked | Resync


class Candidate:
    """The election rules for one candidate (or, with ``participate=False``,
    one observer) of one group."""

    def __init__(
        self,
        group: str,
        candidate: str,
        incarnation: str,
        timing: Timing | None = None,
        *,
        participate: bool = True,
    ) -> None:
        self.group = group
        self.candidate = candidate
        self.incarnation = incarnation
        self.timing = timing or Timing()
        self.participate = participate
        self.hold_off_until = -math.inf
        # When this incarnation first sent a Claim for each term it may still
        # win. Kept across restarts: a Claim given up on, or sent before a
        # resync, can still land and win, and the lease then counts from the
        # first copy sent, not from the one being waited for.
        self.claims_sent: dict[int, float] = {}
        self.restart(low=0, now=-math.inf)

    # -- inputs --------------------------------------------------------------

    def restart(self, low: int, now: float) -> None:
        """Forget everything read; the log will be read again from ``low``."""
        self.view = GroupView(self.group, low)
        self.caught_up = False
        self.folded_through = max(NO_OFFSET, low - 1)
        self.read_at = now
        self.pending_claim: tuple[int, float] | None = None
        self.renew_sent: dict[int, float] = {}
        self.last_renew_at = -math.inf
        self.won_term: int | None = None
        self.replaced: LeaseState | None = None
        self.leading = False
        self.deadline = -math.inf

    def on_record(self, offset: int, record: LeaseRecord, now: float) -> list[Action]:
        """A record of this group was read at ``offset``."""
        before = self.view.state
        state = self.view.apply(offset, record)
        self.folded_through = max(self.folded_through, offset)
        if state is None:
            return []
        if state is not before:
            self.read_at = now
        self._note_own_record(record, before, state)
        for term in [t for t in self.claims_sent if t <= state.term]:
            del self.claims_sent[term]  # a Claim for a term reached can't win
        return self._check_superseded(state, now)

    def on_caught_up(self, end: int, now: float) -> list[Action]:
        """The reader has read everything below ``end`` in the partition."""
        self.caught_up = True
        self.folded_through = max(self.folded_through, end - 1)
        return self.tick(now)

    def on_send_failed(self, record: LeaseRecord, now: float, why: str) -> list[Action]:
        """A write may or may not be in the log: count leadership as lost."""
        return self.lost_track(now, f"{type(record).__name__.lower()} write: {why}")

    def lost_track(
        self, now: float, why: str, reason: str = "unknown-outcome"
    ) -> list[Action]:
        """The log cannot be trusted to be read or written as it should.

        ``reason`` is what a leader's revocation reports: ``unknown-outcome``
        for the log's own troubles, ``fenced`` when the broker refused a
        leader's write because a newer leader fenced it.
        """
        actions: list[Action] = []
        if self.leading:
            actions.append(self._stop(reason))
        logger.warning(
            "group %s candidate %s: %s; reading the log again",
            self.group,
            self.candidate,
            why,
        )
        self.pending_claim = None
        self.renew_sent.clear()
        self.won_term = None
        actions.append(Resync(why))
        return actions

    def resign(self, now: float, hold_off: float | None = None) -> list[Action]:
        """Stop acting, then release the term so another may claim at once.

        The candidate does not claim again for ``hold_off`` seconds (one lease
        unless given), so that the handover goes to someone else.
        """
        actions: list[Action] = []
        state = self.view.state
        if self.leading:
            actions.append(self._stop("resigned"))
        self.hold_off_until = now + (
            self.timing.lease if hold_off is None else hold_off
        )
        if state is not None and state.held_by(self.candidate, self.incarnation):
            actions.append(Send(self._release(state)))
        self.won_term = None
        return actions

    def tick(self, now: float) -> list[Action]:
        """Let time pass: step down, become leader, renew or claim."""
        actions: list[Action] = []
        if self.leading and now >= self.deadline:
            actions.append(self._stop("expired"))
        if not self.participate or not self.caught_up:
            return actions
        state = self.view.state
        if state is None:
            if self._may_claim_fresh(now):
                actions.append(self._claim_fresh(now))
            return actions
        if self._won(state) and not self.leading and now < self.deadline:
            self.leading = True
            logger.info(
                "group %s: %s elected for term %d",
                self.group,
                self.candidate,
                state.term,
            )
            actions.append(Elected(state.term, self.deadline, self.replaced))
        if self.leading:
            if now - self.last_renew_at >= self.timing.renew_interval:
                actions.append(self._renew(state, now))
        elif self._may_claim(state, now):
            actions.append(self._claim(state, now))
        return actions

    def close(self) -> list[Action]:
        """The elector is shutting down: stop leading (not released)."""
        return [self._stop("closed")] if self.leading else []

    # -- queries -------------------------------------------------------------

    @property
    def state(self) -> LeaseState | None:
        """The group's state as far as this candidate has read, if known."""
        return self.view.state

    def is_leader(self, now: float) -> bool:
        """True while this candidate may act as the group's leader."""
        return self.leading and now < self.deadline

    def next_wakeup(self, now: float) -> float:
        """The latest time by which :meth:`tick` should be called again."""
        times = [now + self.timing.renew_interval, self.hold_off_until]
        if self.leading:
            times += [self.deadline, self.last_renew_at + self.timing.renew_interval]
        state = self.view.state
        if state is not None and state.holder is not None:
            times.append(self.read_at + self.timing.patience(state.lease))
        return min(t for t in times if t > now)

    # -- rules ---------------------------------------------------------------

    def _won(self, state: LeaseState) -> bool:
        return self.won_term == state.term and state.held_by(
            self.candidate, self.incarnation
        )

    def _may_claim(self, state: LeaseState, now: float) -> bool:
        self._forget_lost_claim(now)
        if self.pending_claim is not None or now < self.hold_off_until:
            return False
        if state.holder is None:
            return True
        if state.held_by(self.candidate, self.incarnation):
            # Our own term, but we are not acting in it (we lost track of a
            # write, or the deadline passed): nobody else can be leader of it.
            return True
        return now >= self.read_at + self.timing.patience(state.lease)

    def _forget_lost_claim(self, now: float) -> None:
        # A Claim not read back within a lease never got through (or will
        # lose or be superseded): stop waiting for it. Should it land and
        # win after all, the term is ours and we claim the next one at once.
        if self.pending_claim is not None:
            _, sent_at = self.pending_claim
            if now - sent_at > self.timing.patience(self.timing.lease):
                self.pending_claim = None

    def _may_claim_fresh(self, now: float) -> bool:
        self._forget_lost_claim(now)
        return (
            self.view.empty()
            and self.pending_claim is None
            and now >= self.hold_off_until
        )

    def _claim(self, state: LeaseState, now: float) -> Send:
        claim = Claim(
            group=self.group,
            candidate=self.candidate,
            incarnation=self.incarnation,
            term=state.term + 1,
            prev_seq=state.seq,
            lease=self.timing.lease,
            snapshot=state,
            folded_through=self.folded_through,
        )
        self.pending_claim = (claim.term, now)
        self.claims_sent.setdefault(claim.term, now)
        logger.debug(
            "group %s: %s claims term %d", self.group, self.candidate, claim.term
        )
        return Send(claim)

    def _claim_fresh(self, now: float) -> Send:
        base = self.view.low
        claim = Claim(
            group=self.group,
            candidate=self.candidate,
            incarnation=self.incarnation,
            term=base + 1,
            prev_seq=0,
            lease=self.timing.lease,
            base=base,
            folded_through=self.folded_through,
        )
        self.pending_claim = (claim.term, now)
        self.claims_sent.setdefault(claim.term, now)
        logger.info(
            "group %s: no readable record; %s claims fresh term %d",
            self.group,
            self.candidate,
            claim.term,
        )
        return Send(claim)

    def _renew(self, state: LeaseState, now: float) -> Send:
        seq = state.seq + 1
        self.renew_sent.setdefault(seq, now)
        self.last_renew_at = now
        return Send(
            Renew(
                group=self.group,
                holder=self.candidate,
                incarnation=self.incarnation,
                term=state.term,
                seq=seq,
                snapshot=state,
                folded_through=self.folded_through,
            )
        )

    def _release(self, state: LeaseState) -> Release:
        return Release(
            group=self.group,
            holder=self.candidate,
            incarnation=self.incarnation,
            term=state.term,
            snapshot=state,
            folded_through=self.folded_through,
        )

    def _note_own_record(
        self, record: LeaseRecord, before: LeaseState | None, state: LeaseState
    ) -> None:
        """Learn from our own records coming back: a won Claim, a counted Renew."""
        if record.incarnation != self.incarnation:
            return
        if isinstance(record, Claim) and self.pending_claim is not None:
            term, sent_at = self.pending_claim
            if record.term != term:
                return
            self.pending_claim = None
            sent_at = min(sent_at, self.claims_sent.get(term, sent_at))
            if state.term == term and state.held_by(self.candidate, self.incarnation):
                self.won_term = term
                self.replaced = before
                self.deadline = sent_at + self.timing.budget(self.timing.lease)
                self.last_renew_at = sent_at
                self.renew_sent.clear()
        elif isinstance(record, Renew) and self._won(state) and state.seq == record.seq:
            renewed_at = self.renew_sent.get(record.seq)
            for seq in [s for s in self.renew_sent if s <= record.seq]:
                del self.renew_sent[seq]
            if renewed_at is not None:
                self.deadline = max(
                    self.deadline, renewed_at + self.timing.budget(state.lease)
                )

    def _check_superseded(self, state: LeaseState, now: float) -> list[Action]:
        if self.leading and not self._won(state):
            # Past the deadline (a pause, say) the lease ran out first; the
            # log showing a successor is the ordinary consequence.
            return [self._stop("expired" if now >= self.deadline else "superseded")]
        if not self._won(state):
            self.won_term = None
        return []

    def _stop(self, reason: str) -> Revoked:
        term = self.won_term if self.won_term is not None else 0
        self.leading = False
        self.won_term = None
        log = (
            logger.warning
            if reason in ("expired", "unknown-outcome", "fenced")
            else logger.info
        )
        log(
            "group %s: %s stops leading term %d (%s)",
            self.group,
            self.candidate,
            term,
            reason,
        )
        return Revoked(term, reason)
