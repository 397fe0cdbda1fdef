"""The pool's queue policy, with fake replicas and a fake clock: no process, no thread, no sleep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from parapipe.batching import BatchQueue
from parapipe.worker.dispatch import Dispatcher, Task
from parapipe.worker.protocol import BATCH, TASKS


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeReplica:
    name: str
    msgs: int = 0
    held: int = 0
    exclusive: bool = False


@dataclass
class FakeJob:
    finished: bool = False
    on_retry: Any = None


def task(item: Any, job: FakeJob | None = None) -> Task:
    return Task(item, lambda ok, value: None, job=job)


def items(assignment: Any) -> list[Any]:
    return [t.item for t in assignment.tasks]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_unmeasured_tasks_go_one_per_message_to_the_least_loaded_replica(clock: FakeClock) -> None:
    d = Dispatcher(clock=clock)
    for i in range(5):
        d.put(task(i))
    busy, idle = FakeReplica("busy", msgs=1, held=1), FakeReplica("idle")
    out = d.assign([busy, idle])
    assert [(a.replica.name, items(a), a.kind) for a in out] == [
        ("idle", [0], TASKS), ("busy", [1], TASKS), ("idle", [2], TASKS)
    ]  # fmt: skip
    assert len(d) == 2  # every replica holds its 2 messages: the rest wait here


def test_cheap_tasks_are_packed_but_every_free_replica_gets_a_share(clock: FakeClock) -> None:
    d = Dispatcher(clock=clock)
    d.cost = 1e-5  # 200 tasks make 2 ms of work
    for i in range(40):
        d.put(task(i))
    out = d.assign([FakeReplica("a"), FakeReplica("b")])
    assert [len(a.tasks) for a in out] == [10, 8, 6, 8]  # half the queue, over the replicas still free
    assert {a.replica.name for a in out} == {"a", "b"}


def test_packing_is_off_for_a_timed_stage(clock: FakeClock) -> None:
    d = Dispatcher(max_msgs=1, packing=False, clock=clock)
    d.cost = 1e-5
    for i in range(4):
        d.put(task(i))
    out = d.assign([FakeReplica("a")])
    assert [items(a) for a in out] == [[0]]


def test_slow_items_get_no_second_message(clock: FakeClock) -> None:
    d = Dispatcher(clock=clock)
    d.cost = 0.5
    for i in range(3):
        d.put(task(i))
    assert d.prefetch() == 1
    assert [items(a) for a in d.assign([FakeReplica("a", msgs=1, held=1), FakeReplica("b")])] == [[0]]


def test_a_retried_task_goes_alone_to_an_idle_replica(clock: FakeClock) -> None:
    d = Dispatcher(clock=clock)
    d.cost = 1e-5
    retried = task("retried")
    retried.attempts = 1
    d.put(task("new"))
    d.requeue([retried])
    out = d.assign([FakeReplica("busy", msgs=1, held=3), FakeReplica("idle")])
    assert (out[0].replica.name, items(out[0]), out[0].exclusive) == ("idle", ["retried"], True)
    assert [(a.replica.name, items(a)) for a in out[1:]] == [("busy", ["new"])]  # idle takes nothing more


def test_a_retried_task_waits_while_every_replica_is_busy(clock: FakeClock) -> None:
    d = Dispatcher(clock=clock)
    retried = task("retried")
    retried.alone = True  # an element of a chunk whose worker died
    d.put(retried)
    assert d.assign([FakeReplica("a", msgs=1, held=1)]) == []
    assert d.assign([FakeReplica("a")])[0].exclusive


def test_abandoned_tasks_are_dropped_not_sent(clock: FakeClock) -> None:
    d = Dispatcher(clock=clock)
    d.put(task("gone", FakeJob(finished=True)))
    d.put(task("live"))
    assert [items(a) for a in d.assign([FakeReplica("a")])] == [["live"]]
    assert len(d) == 0


def test_a_batch_waits_for_its_deadline_then_goes_without_cancelled_items(clock: FakeClock) -> None:
    d = Dispatcher(batcher=BatchQueue[Task](4, 0.5, clock=clock), clock=clock)
    cancelled = FakeJob()
    d.put(task("a"))
    d.put(task("b", cancelled))
    d.put(task("c"))
    replica = FakeReplica("r")
    assert d.assign([replica]) == []
    assert d.batch_timer() == 0.5  # arm the timer once...
    assert d.batch_timer() is None  # ...not again for the same oldest item
    cancelled.finished = True
    clock.now += 0.5
    out = d.assign([replica])
    assert [(items(a), a.kind) for a in out] == [(["a", "c"], BATCH)]
    assert d.batch_stats is not None and d.batch_stats.items == 2


def test_take_all_empties_both_queues(clock: FakeClock) -> None:
    d = Dispatcher(batcher=BatchQueue[Task](4, 0.5, clock=clock), clock=clock)
    retried = task("retried")
    retried.attempts = 1
    d.put(task("new"))
    d.requeue([retried])
    d.assign([])  # moves "new" into the batch queue
    assert sorted(t.item for t in d.take_all()) == ["new", "retried"]
    assert len(d) == 0


def test_a_put_behind_waiting_tasks_asks_for_no_assign_and_the_next_one_sends_them_all(clock: FakeClock) -> None:
    d = Dispatcher(clock=clock)
    full = FakeReplica("a", msgs=2, held=2)
    assert d.put(task(0))  # the queue was empty: the pool assigns (and finds no room)
    assert d.assign([full]) == []
    assert not d.put(task(1)) and not d.put(task(2))  # nothing changed since: no scan
    full.msgs = full.held = 0  # a result arrived: the pool pumps
    assert [items(a) for a in d.assign([full])] == [[0], [1]]
    assert [items(a) for a in d.assign([FakeReplica("b")])] == [[2]]


def test_a_batched_stage_assigns_on_every_put(clock: FakeClock) -> None:
    d = Dispatcher(clock=clock, batcher=BatchQueue[Task](4, 0.01))
    assert d.put(task(0)) and d.put(task(1))
