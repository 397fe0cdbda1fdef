"""The batching policy, driven by a fake clock: no thread, no sleep, every deadline exact."""

from __future__ import annotations

import json
import pickle

import pytest

from parapipe.batching import BatchQueue, BatchSizeMismatch, BatchStats, check_batch_result
from parapipe.errors import ConfigError, ParapipeError


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, size: float = 4, wait: float = 0.5, **kw) -> BatchQueue:
    return BatchQueue(size, wait, clock=clock, **kw)


def test_full_batch_goes_at_once(clock: FakeClock) -> None:
    q = make(clock)
    for i in range(3):
        q.put(i)
        assert q.take() == []
    q.put(3)
    assert q.take() == [0, 1, 2, 3]
    assert len(q) == 0


def test_full_batch_leaves_the_rest_waiting(clock: FakeClock) -> None:
    q = make(clock)
    for i in range(6):
        q.put(i)
    assert q.take() == [0, 1, 2, 3]
    assert q.take() == []
    assert len(q) == 2


def test_partial_batch_waits_from_first_arrival_not_last(clock: FakeClock) -> None:
    q = make(clock, wait=0.5)
    q.put("a")
    clock.advance(0.3)
    q.put("b")
    clock.advance(0.19)
    assert q.take() == []
    clock.advance(0.01)  # 0.5 s after "a", only 0.2 s after "b"
    assert q.take() == ["a", "b"]


def test_next_deadline_is_first_arrival_plus_wait(clock: FakeClock) -> None:
    q = make(clock, wait=0.5)
    assert q.next_deadline() is None
    q.put("a")
    clock.advance(0.2)
    q.put("b")
    assert q.next_deadline() == pytest.approx(100.5)
    clock.now = q.next_deadline()
    assert q.take() == ["a", "b"]
    assert q.next_deadline() is None


def test_next_deadline_follows_the_oldest_leftover(clock: FakeClock) -> None:
    q = make(clock, size=2, wait=0.5)
    q.put(0)
    q.put(1)
    clock.advance(0.1)
    q.put(2)
    assert q.take() == [0, 1]
    assert q.next_deadline() == pytest.approx(100.6)


def test_leftover_that_already_waited_goes_without_a_new_wait(clock: FakeClock) -> None:
    """Each item waits at most batch_wait in the queue: latency stays bounded under load."""
    q = make(clock, size=2, wait=0.5)
    for i in range(3):
        q.put(i)
    clock.advance(0.6)
    assert q.take() == [0, 1]
    assert q.take() == [2]


def test_force_flushes_a_partial_batch(clock: FakeClock) -> None:
    q = make(clock)
    q.put(1)
    q.put(2)
    assert q.take() == []
    assert q.take(force=True) == [1, 2]
    assert q.take(force=True) == []


def test_fifo_order_across_batches(clock: FakeClock) -> None:
    q = make(clock, size=3)
    for i in range(10):
        q.put(i)
    got = []
    while batch := q.take(force=True):
        got.append(batch)
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_cost_groups_by_audio_seconds(clock: FakeClock) -> None:
    q = make(clock, size=30.0, cost=lambda clip: clip[1])
    q.put(("a", 10.0))
    q.put(("b", 12.5))
    assert q.take() == []  # 22.5 s: could still fill
    q.put(("c", 7.5))
    assert [name for name, _ in q.take()] == ["a", "b", "c"]  # exactly 30 s


def test_batch_that_cannot_grow_goes_at_once(clock: FakeClock) -> None:
    """The next item would overflow it, and items are never reordered: waiting is useless."""
    q = make(clock, size=30.0, cost=lambda clip: clip[1])
    q.put(("a", 20.0))
    q.put(("b", 20.0))
    assert [name for name, _ in q.take()] == ["a"]
    assert q.take() == []
    assert len(q) == 1


def test_oversized_item_forms_a_batch_alone(clock: FakeClock) -> None:
    q = make(clock, size=30.0, cost=lambda clip: clip[1])
    q.put(("short", 5.0))
    q.put(("long", 45.0))
    q.put(("after", 1.0))
    assert [name for name, _ in q.take()] == ["short"]
    assert [name for name, _ in q.take()] == ["long"]
    assert q.take() == []
    assert [name for name, _ in q.take(force=True)] == ["after"]


def test_zero_cost_items_ride_along(clock: FakeClock) -> None:
    q = make(clock, size=2.0, cost=lambda x: x)
    q.put(0.0)
    q.put(2.0)
    q.put(0.0)
    assert q.take() == [0.0, 2.0]


def test_zero_wait_sends_every_item_at_once(clock: FakeClock) -> None:
    q = make(clock, wait=0.0)
    q.put(1)
    assert q.take() == [1]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0,), {}),
        ((-1,), {}),
        ((2.5,), {}),
        ((True,), {}),
        ((4, -0.1), {}),
        ((4, float("inf")), {}),
        ((float("nan"),), {"cost": len}),
    ],
)
def test_bad_options_are_config_errors(args: tuple, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        BatchQueue(*args, **kwargs)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "3", None])
def test_bad_cost_is_reported_at_put(clock: FakeClock, bad: object) -> None:
    q = make(clock, cost=lambda item: bad)
    with pytest.raises(ConfigError, match="cost function returned"):
        q.put("x")
    assert len(q) == 0


def test_fractional_batch_size_is_fine_with_a_cost(clock: FakeClock) -> None:
    q = make(clock, size=2.5, cost=lambda x: x)
    q.put(1.0)
    q.put(1.5)
    assert q.take() == [1.0, 1.5]


def test_stats_histogram() -> None:
    stats = BatchStats()
    assert stats.as_dict() == {
        "batches": 0,
        "items": 0,
        "mean_size": 0.0,
        "exact": {},
        "buckets": {},
    }
    for n in (1, 1, 2, 3, 4, 8, 5):
        stats.record(n)
    d = stats.as_dict()
    assert d["batches"] == 7
    assert d["items"] == 24
    assert d["mean_size"] == pytest.approx(24 / 7)
    assert d["exact"] == {"1": 2, "2": 1, "3": 1, "4": 1, "5": 1, "8": 1}
    assert d["buckets"] == {"1": 2, "2": 1, "3-4": 2, "5-8": 2}
    assert json.loads(json.dumps(d)) == d


def test_stats_buckets_include_empty_ones_below_the_largest() -> None:
    stats = BatchStats()
    stats.record(1)
    stats.record(20)
    assert stats.as_dict()["buckets"] == {"1": 1, "2": 0, "3-4": 0, "5-8": 0, "9-16": 0, "17-32": 1}


def test_stats_refuse_empty_batches() -> None:
    with pytest.raises(ValueError):
        BatchStats().record(0)


def test_check_batch_result_accepts_one_result_per_item() -> None:
    assert check_batch_result([1, 2, 3], 3, "asr") == [1, 2, 3]
    assert check_batch_result((x for x in "ab"), 2, "asr") == ["a", "b"]


def test_check_batch_result_message() -> None:
    with pytest.raises(BatchSizeMismatch) as info:
        check_batch_result([1, 2, 3], 4, "asr")
    assert str(info.value) == (
        "stage 'asr': process_batch returned 3 results for a batch of 4 items; "
        "return exactly one result per item, in order"
    )
    assert isinstance(info.value, ParapipeError)
    assert (info.value.stage, info.value.expected, info.value.returned) == ("asr", 4, 3)


def test_check_batch_result_singular_wording() -> None:
    with pytest.raises(BatchSizeMismatch, match="returned 1 result for a batch of 2 items"):
        check_batch_result(["x"], 2, "asr")
    with pytest.raises(BatchSizeMismatch, match="returned 0 results for a batch of 1 item;"):
        check_batch_result([], 1, "asr")


@pytest.mark.parametrize("bad", [None, "ab", b"ab", {"a": 1, "b": 2}, 2])
def test_check_batch_result_refuses_non_lists(bad: object) -> None:
    expected = f"returned a value of type {type(bad).__name__} for a batch"
    with pytest.raises(BatchSizeMismatch, match=expected):
        check_batch_result(bad, 2, "asr")


def test_batch_size_mismatch_survives_pickling() -> None:
    """Raised in a worker, it must cross the process boundary intact."""
    err = BatchSizeMismatch("asr", 4, 3)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is BatchSizeMismatch
    assert str(back) == str(err)
    assert back.returned == 3
