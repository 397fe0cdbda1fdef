"""`SegmentLedger`: the parent's segments a worker may read are recycled once, or unlinked on its death.

Real segments in /dev/shm; the worker's side (what it maps and reports) is played by the test.
"""

from __future__ import annotations

from parapipe.transport import SegmentArena, SegmentLedger, encode_with_names, release

from ._shm import big_array, ours


def _message(arena: SegmentArena, seed: int) -> list[str]:
    """The segments of one message that holds two arrays."""
    return encode_with_names([big_array(1, seed), big_array(1, seed + 1)], arena=arena)[1]


def test_answered_segments_come_back_once_reported_unmapped(arena: SegmentArena) -> None:
    ledger = SegmentLedger()
    first, second = _message(arena, 0), _message(arena, 2)
    ledger.sent(1, first)
    ledger.sent(3, second)
    assert ledger.answered(1, []) == []  # lent: the worker may still map them
    assert ledger.answered(3, [first[0]]) == [first[0]]
    assert ledger.answered(5, [first[0], first[1]]) == [first[1]]  # each name is given back once
    arena.recycle([*first])
    ledger.release_all()
    assert ours() == sorted(first)  # kept by the arena for reuse; the lent second message unlinked


def test_unmapped_names_of_a_message_not_yet_answered_are_not_given_back(arena: SegmentArena) -> None:
    ledger = SegmentLedger()
    names = _message(arena, 0)
    ledger.sent(1, names)
    assert ledger.answered(7, names) == []  # another message's answer: these are still sent
    assert ledger.answered(1, []) == []
    assert ledger.answered(9, [*names, "parapipe-1-0-0123456789abcdef"]) == names  # foreign names ignored
    release(names)


def test_release_all_unlinks_what_is_sent_or_lent(arena: SegmentArena) -> None:
    ledger = SegmentLedger()
    lent, sent = _message(arena, 0), _message(arena, 2)
    ledger.sent(1, lent)
    ledger.answered(1, [])
    ledger.sent(3, sent)
    assert len(ours()) == 4
    ledger.release_all()
    assert ours() == []
    ledger.release_all()  # forgotten: nothing left to release
    assert ledger.answered(3, sent) == []


def test_a_message_without_segments_leaves_no_trace() -> None:
    ledger = SegmentLedger()
    ledger.sent(1, [])
    assert ledger.answered(1, []) == []
    ledger.release_all()
