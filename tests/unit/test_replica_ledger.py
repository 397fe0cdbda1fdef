"""`ReplicaLedger.withdraw`: the items of a message that could not be encoded leave the ledger
before it is written, and a message left empty counts as answered (no answer will come)."""

from __future__ import annotations

from typing import Any

from parapipe.resources import WorkerBudget
from parapipe.worker.dispatch import Task
from parapipe.worker.ledger import ReplicaLedger


def _ledger_with(tids: list[int]) -> tuple[ReplicaLedger, dict[int, Task]]:
    owner: Any = type("Owner", (), {"name": "s"})()
    ledger = ReplicaLedger(owner, WorkerBudget(stage="s", replica=0, threads=1, cores=()))
    tasks = {tid: Task(tid, lambda ok, value: None) for tid in tids}
    ledger.record(tids, list(tasks.values()), exclusive=False)
    return ledger, tasks


def test_the_unencodable_items_leave_and_the_rest_is_written_with_its_segments() -> None:
    ledger, tasks = _ledger_with([5, 6, 7])
    why = TypeError("cannot pickle")
    dropped, left = ledger.withdraw([5, 6, 7], [(6, why)], ["seg-a"])
    assert dropped == [(tasks[6], why)] and left
    assert set(ledger.inflight) == {5, 7} and ledger.msgs == 1
    assert ledger.answered(["seg-a"]) == ["seg-a"]  # the segments joined the message's ledger


def test_a_message_with_nothing_left_counts_as_answered() -> None:
    ledger, tasks = _ledger_with([1, 2])
    ledger.record([3], [Task(3, lambda ok, value: None)], exclusive=False)  # a later message stays
    dropped, left = ledger.withdraw([1, 2], [(1, ValueError("a")), (2, ValueError("b"))], [])
    assert [t for t, _ in dropped] == [tasks[1], tasks[2]] and not left
    assert ledger.msgs == 1 and list(ledger.sent) == [[3]] and set(ledger.inflight) == {3}


def test_an_item_already_gone_is_not_dropped_twice() -> None:
    ledger, _ = _ledger_with([4])
    ledger.inflight.pop(4)  # e.g. its job was settled meanwhile
    dropped, left = ledger.withdraw([4], [(4, ValueError("x"))], [])
    assert dropped == [] and not left and ledger.msgs == 0
