"""A replica's shared-memory ledger: sent -> lent on answer -> recycled when unmapped, or
unlinked when the worker dies."""

from __future__ import annotations

import pytest

from parapipe.worker import replica


@pytest.fixture
def released(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    out: list[str] = []
    monkeypatch.setattr(replica.transport, "release", lambda names: out.extend(sorted(names)))
    return out


def test_only_segments_of_answered_messages_are_recycled(released: list[str]) -> None:
    ledger = replica.SegmentLedger()
    ledger.sent(1, ["a", "b"])
    ledger.sent(5, ["c"])
    assert ledger.answered(1, ["a", "c", "unknown"]) == ["a"]  # c is still in flight
    assert ledger.answered(5, []) == []  # c is lent now: the worker may still map it
    assert ledger.answered(9, ["c"]) == ["c"]
    ledger.release_all()
    assert released == ["b"]


def test_a_dead_worker_releases_what_was_sent_and_what_was_lent(released: list[str]) -> None:
    ledger = replica.SegmentLedger()
    ledger.sent(1, ["lent"])
    ledger.sent(2, ["sent"])
    ledger.answered(1, [])
    ledger.release_all()
    assert sorted(released) == ["lent", "sent"]
    released.clear()
    ledger.release_all()
    assert released == []
