"""The lease log: its records and the pure fold that decides who holds a term.

Rules of the fold
=================

All records of one election group share a key, so they sit in one partition
and every participant reads them in the same order. Each participant folds
them, one at a time, through :func:`fold`, a pure function of the state it
had, the record and the record's offset. Nothing in here reads a clock: the
log decides *who* holds a term; the elector's local monotonic clock decides
*how long* (see :mod:`nccoord.elector`).

1. A :class:`Claim` is a compare-and-set. It names the state its writer had
   folded (``term == state.term + 1`` and ``prev_seq == state.seq``) and
   wins only if that is still the state when the log reaches it. A Renew or
   a rival Claim that landed first makes it lose. The winner holds ``term``
   with ``seq = 0`` and the lease it wrote.
2. A :class:`Renew` counts only from the holder's incarnation, for its term,
   with ``seq == state.seq + 1``.
3. A :class:`Release` from the holder's incarnation for its term leaves the
   term with no holder; the next Claim may follow at once.
4. Everything else (stale terms, duplicates, foreign releases, a restarted
   process's old incarnation) is ignored, and folding a record a second time
   changes nothing: the state remembers the offset of the last record that
   counted.

Joining after retention deleted the start
-----------------------------------------

The log is never compacted; old segments expire by time. Every record
therefore carries the state its writer had folded (``snapshot``) and the
offset it had folded through (``folded_through``). A newcomer whose first
readable offset is ``low`` keeps the group's records aside until it meets
the first record whose base (``folded_through + 1``) it can still read; it
takes that record's snapshot and folds the kept records after the base. See
:class:`GroupView`.

Terms never go backwards, even when retention has deleted every record of a
group. A candidate that finds no readable record of its group at all, in a
log whose start was deleted, writes a *fresh* Claim: ``prev`` unknown,
``base`` set to the first offset it could read, and ``term = base + 1``.
Such a Claim wins when ``base`` is past the last record that counted in the
reader's state. Because every term is won by a Claim at a distinct, growing
offset, ``state.term <= state.last_offset + 1`` always holds, so the fresh
term is above every term a reader could have seen.
"""

from __future__ import annotations

import logging
from typing import Final

import msgspec

from .errors import EventError

logger = logging.getLogger(__name__)

NO_OFFSET: Final = -1


class LeaseState(msgspec.Struct, frozen=True, kw_only=True):
    """What the log says about one group, as of ``last_offset``.

    ``holder`` and ``incarnation`` are ``None`` when the term has no holder
    (before the first Claim, and after a Release). ``lease`` is in seconds,
    as the holder wrote it in its Claim. ``last_offset`` is the offset of the
    last record that counted, or ``NO_OFFSET``.
    """

    term: int = 0
    holder: str | None = None
    incarnation: str | None = None
    seq: int = 0
    lease: float = 0.0
    last_offset: int = NO_OFFSET

    def held_by(self, candidate: str, incarnation: str) -> bool:
        return self.holder == candidate and self.incarnation == incarnation


INITIAL: Final = LeaseState()


class _Record(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    group: str
    term: int
    incarnation: str
    snapshot: LeaseState | None = None
    folded_through: int = NO_OFFSET


class Claim(_Record, tag="claim", frozen=True, kw_only=True):
    """Ask for ``term``, naming the state seen (``term - 1``, ``prev_seq``).

    A fresh Claim (``base`` set) is written by a candidate that could read no
    record of the group because retention deleted it; see the module text.
    """

    candidate: str
    prev_seq: int
    lease: float
    base: int | None = None


class Renew(_Record, tag="renew", frozen=True, kw_only=True):
    """Extend the holder's lease for its term; ``seq`` counts up from 1."""

    holder: str
    seq: int


class Release(_Record, tag="release", frozen=True, kw_only=True):
    """Give up the term so the next candidate may claim at once."""

    holder: str


LeaseRecord = Claim | Renew | Release

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LeaseRecord)


def encode(record: LeaseRecord) -> bytes:
    """The record's bytes on the lease topic."""
    return _encoder.encode(record)


def decode(data: bytes) -> LeaseRecord:
    """Read a lease record; raise :class:`EventError` naming the fault."""
    try:
        record = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise EventError(str(exc), _field_of(exc)) from exc
    except msgspec.DecodeError as exc:
        raise EventError(f"not a lease record: {exc}") from exc
    if record.term < 0 or (isinstance(record, Claim) and record.lease <= 0):
        raise EventError("must be positive", "lease" if record.term >= 0 else "term")
    return record


def _field_of(exc: msgspec.ValidationError) -> str | None:
    text = str(exc)
    marker = "at `$."
    if marker not in text:
        return None
    return text.split(marker, 1)[1].split("`", 1)[0]


def fold(state: LeaseState, offset: int, record: LeaseRecord) -> LeaseState:
    """Apply one record at ``offset`` to the group's state; pure.

    Records at or below ``state.last_offset`` were already folded and change
    nothing, so a reader that sees a record twice stays where it was.
    """
    if offset <= state.last_offset:
        return state
    if isinstance(record, Claim):
        return _fold_claim(state, offset, record)
    if isinstance(record, Renew):
        return _fold_renew(state, offset, record)
    return _fold_release(state, offset, record)


def _fold_claim(state: LeaseState, offset: int, claim: Claim) -> LeaseState:
    if claim.base is None:
        # Rule 1: compare-and-set on the state the claimant saw.
        won = claim.term == state.term + 1 and claim.prev_seq == state.seq
    else:
        # A fresh claim: its writer could not read this state's last record.
        won = claim.base > state.last_offset and claim.term > state.term
    if not won:
        logger.debug(
            "claim by %s for term %d lost at offset %d (state term %d seq %d)",
            claim.candidate,
            claim.term,
            offset,
            state.term,
            state.seq,
        )
        return state
    return LeaseState(
        term=claim.term,
        holder=claim.candidate,
        incarnation=claim.incarnation,
        seq=0,
        lease=claim.lease,
        last_offset=offset,
    )


def _fold_renew(state: LeaseState, offset: int, renew: Renew) -> LeaseState:
    # Rule 2: only the holder's own incarnation, in its term, in sequence.
    if not (
        state.held_by(renew.holder, renew.incarnation)
        and renew.term == state.term
        and renew.seq == state.seq + 1
    ):
        return state
    return msgspec.structs.replace(state, seq=renew.seq, last_offset=offset)


def _fold_release(state: LeaseState, offset: int, release: Release) -> LeaseState:
    # Rule 3: the holder's incarnation gives up its own term, nothing else.
    if not (
        state.held_by(release.holder, release.incarnation)
        and release.term == state.term
    ):
        return state
    return LeaseState(
        term=state.term,
        seq=state.seq,
        lease=state.lease,
        last_offset=offset,
    )


class GroupView:
    """One reader's view of one group: the fold, plus joining a trimmed log.

    ``low`` is the first offset the reader could read when it started. With
    ``low == 0`` the whole history is there and the view starts at once from
    :data:`INITIAL`. Otherwise records are kept aside until one shows a base
    the reader can read (module text), or until the reader has read to the
    end without meeting any record of the group: then the group is *empty*
    as far as the log can tell, and the only Claim that can win is a fresh
    one (:meth:`empty`).
    """

    def __init__(self, group: str, low: int = 0) -> None:
        self.group = group
        self.low = low
        self.state: LeaseState | None = INITIAL if low == 0 else None
        self._kept: list[tuple[int, LeaseRecord]] = []

    @property
    def established(self) -> bool:
        return self.state is not None

    def empty(self) -> bool:
        """True when the reader has met no record of the group at all."""
        return self.state is None and not self._kept

    def apply(self, offset: int, record: LeaseRecord) -> LeaseState | None:
        """Fold one record of this group; return the state, if known yet."""
        if self.state is not None:
            self.state = fold(self.state, offset, record)
            return self.state
        self._kept.append((offset, record))
        if record.folded_through + 1 < self.low:
            return None
        state = INITIAL if record.snapshot is None else record.snapshot
        for kept_offset, kept in self._kept:
            if kept_offset > record.folded_through:
                state = fold(state, kept_offset, kept)
        self._kept.clear()
        self.state = state
        return state
