"""The fold's rules (nccoord.lease module text), one test per rule."""

from __future__ import annotations

import pytest

from nccoord.errors import EventError
from nccoord.lease import (
    INITIAL,
    Claim,
    GroupView,
    LeaseState,
    Release,
    Renew,
    decode,
    encode,
    fold,
)

G = "g"


def claim(
    who: str, term: int, prev_seq: int = 0, inc: str | None = None, **kw: object
) -> Claim:
    return Claim(
        group=G,
        candidate=who,
        incarnation=inc or f"{who}-1",
        term=term,
        prev_seq=prev_seq,
        lease=2.0,
        **kw,  # type: ignore[arg-type]
    )


def renew(who: str, term: int, seq: int, inc: str | None = None) -> Renew:
    return Renew(group=G, holder=who, incarnation=inc or f"{who}-1", term=term, seq=seq)


def release(who: str, term: int, inc: str | None = None) -> Release:
    return Release(group=G, holder=who, incarnation=inc or f"{who}-1", term=term)


def run(*records: object, start: LeaseState = INITIAL) -> LeaseState:
    state = start
    for offset, record in enumerate(records):
        state = fold(state, offset, record)  # type: ignore[arg-type]
    return state


def test_rule1_claim_naming_the_state_wins_with_seq_zero_and_its_lease() -> None:
    state = run(claim("a", 1))
    assert (state.term, state.holder, state.incarnation, state.seq) == (
        1,
        "a",
        "a-1",
        0,
    )
    assert state.lease == 2.0
    assert state.last_offset == 0


def test_rule1_claim_for_a_term_that_skips_ahead_loses() -> None:
    assert run(claim("a", 2)) == INITIAL


def test_rule1_rival_claim_that_landed_second_loses() -> None:
    state = run(claim("a", 1), claim("b", 1))
    assert state.holder == "a"


def test_rule1_claim_with_stale_prev_seq_loses_after_a_renew() -> None:
    # b saw term 1 at seq 0, but a's renew landed first.
    state = run(claim("a", 1), renew("a", 1, 1), claim("b", 2, prev_seq=0))
    assert (state.term, state.holder, state.seq) == (1, "a", 1)


def test_rule1_claim_naming_current_seq_takes_the_next_term() -> None:
    state = run(claim("a", 1), renew("a", 1, 1), claim("b", 2, prev_seq=1))
    assert (state.term, state.holder, state.seq) == (2, "b", 0)


def test_rule2_renew_in_sequence_counts() -> None:
    state = run(claim("a", 1), renew("a", 1, 1), renew("a", 1, 2))
    assert state.seq == 2
    assert state.last_offset == 2


def test_rule2_renew_out_of_sequence_is_ignored() -> None:
    state = run(claim("a", 1), renew("a", 1, 2))
    assert state.seq == 0


def test_rule2_renew_from_another_incarnation_is_ignored() -> None:
    # The same candidate id, restarted: its old incarnation no longer holds.
    state = run(claim("a", 1), renew("a", 1, 1, inc="a-2"))
    assert state.seq == 0


def test_rule2_renew_for_a_stale_term_is_ignored() -> None:
    state = run(claim("a", 1), claim("b", 2), renew("a", 1, 1))
    assert (state.term, state.holder, state.seq) == (2, "b", 0)


def test_rule2_renew_from_non_holder_is_ignored() -> None:
    state = run(claim("a", 1), renew("b", 1, 1))
    assert state.seq == 0


def test_rule3_release_by_holder_leaves_term_without_holder() -> None:
    state = run(claim("a", 1), release("a", 1))
    assert (state.term, state.holder, state.incarnation) == (1, None, None)


def test_rule3_after_release_next_claim_wins() -> None:
    state = run(claim("a", 1), release("a", 1), claim("b", 2))
    assert (state.term, state.holder) == (2, "b")


def test_rule3_foreign_release_is_ignored() -> None:
    state = run(claim("a", 1), release("b", 1))
    assert state.holder == "a"


def test_rule3_release_of_an_old_term_is_ignored() -> None:
    state = run(claim("a", 1), claim("b", 2), release("a", 1))
    assert state.holder == "b"


def test_rule3_release_from_old_incarnation_is_ignored() -> None:
    state = run(claim("a", 1), release("a", 1, inc="a-2"))
    assert state.holder == "a"


def test_rule4_folding_the_same_record_twice_changes_nothing() -> None:
    once = run(claim("a", 1), renew("a", 1, 1))
    twice = fold(once, 1, renew("a", 1, 1))
    assert twice == once
    again = fold(once, 0, claim("a", 1))
    assert again == once


def test_rule4_duplicate_delivered_at_a_later_offset_changes_nothing() -> None:
    state = run(claim("a", 1), renew("a", 1, 1), renew("a", 1, 1), claim("a", 1))
    assert (state.term, state.seq, state.last_offset) == (1, 1, 1)


def test_rule4_terms_never_go_backwards_under_any_stale_record() -> None:
    state = run(claim("a", 1), claim("b", 2), claim("c", 1), claim("c", 2))
    assert (state.term, state.holder) == (2, "b")


def test_fresh_claim_after_retention_wins_above_every_seen_term() -> None:
    # A long-running reader saw term 57, last counted at offset 100. Retention
    # deleted it; a newcomer that reads from offset 500 claims term 501.
    old = LeaseState(term=57, holder=None, seq=3, lease=2.0, last_offset=100)
    fresh = claim("n", 501, base=500)
    after_old = fold(old, 600, fresh)
    after_new = fold(INITIAL, 600, fresh)
    assert after_old == after_new
    assert (after_old.term, after_old.holder) == (501, "n")


def test_fresh_claim_loses_when_its_writer_could_have_read_the_state() -> None:
    seen = LeaseState(term=3, holder="a", incarnation="a-1", last_offset=700)
    assert fold(seen, 800, claim("n", 501, base=500)) == seen


def test_view_joining_a_trimmed_log_adopts_the_first_readable_snapshot() -> None:
    # Full history, folded by an old reader.
    history = [claim("a", 1), renew("a", 1, 1), renew("a", 1, 2), claim("b", 2, 2)]
    full = GroupView(G)
    for offset, record in enumerate(history):
        full.apply(offset, record)
    # Offsets 0..1 are gone; offset 2 carries a snapshot as of offset 0
    # (base 1 unreadable), offset 3 a snapshot as of offset 2 (readable).
    trimmed = GroupView(G, low=2)
    snap_0 = run(history[0])
    snap_2 = run(*history[:3])
    r2 = Renew(
        group=G,
        holder="a",
        incarnation="a-1",
        term=1,
        seq=2,
        snapshot=snap_0,
        folded_through=0,
    )
    r3 = claim("b", 2, 2, snapshot=snap_2, folded_through=2)
    assert trimmed.apply(2, r2) is None
    assert trimmed.apply(3, r3) == full.state


def test_view_of_a_trimmed_log_with_no_record_of_the_group_is_empty() -> None:
    view = GroupView(G, low=10)
    assert view.empty() and not view.established
    view.apply(12, claim("n", 11, base=10, folded_through=11))
    assert view.state is not None and view.state.term == 11


def test_decode_round_trip_and_bad_records_name_the_field() -> None:
    record = claim("a", 1)
    assert decode(encode(record)) == record
    with pytest.raises(EventError) as bad:
        decode(b'{"type":"claim","group":"g","term":"x"}')
    assert bad.value.field == "term"
    with pytest.raises(EventError):
        decode(b"not json")
    with pytest.raises(EventError) as negative:
        decode(encode(claim("a", 1)).replace(b'"lease":2.0', b'"lease":-1.0'))
    assert negative.value.field == "lease"
