"""MapWindow without an engine: a fake ``submit`` answers at once, so order, chunks and errors
are checked exactly."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

import parapipe as pp
from parapipe.mapper import MapWindow, chunk_size
from parapipe.worker.protocol import Chunk, ChunkResult


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
    return future


def _chunk_failing_on_threes(value: Any, index: int) -> Future[Any]:
    """Squares; an element whose number ends in 3 fails as the pool reports it: an ItemError
    with no index (the window sets it)."""
    items = value if isinstance(value, Chunk) else [value]
    errors = {k: pp.StageError("sq", f"{x} ends in 3") for k, x in enumerate(items) if x % 10 == 3}
    values = [None if k in errors else x * x for k, x in enumerate(items)]
    if not isinstance(value, Chunk):
        return _done(errors[0] if errors else values[0])
    return _done(ChunkResult(values, errors))  # type: ignore[arg-type]


def _window(**options: Any) -> MapWindow:
    return MapWindow(_chunk_failing_on_threes, window=3, chunk_size=lambda: 4, **options)


def test_chunk_errors_are_item_errors_with_the_element_index():
    out = [x for unit in _window(return_exceptions=True).units(iter(range(30))) for x in unit]
    failed = [i for i, x in enumerate(out) if isinstance(x, pp.StageError)]
    assert failed == [3, 13, 23]
    assert [out[i].index for i in failed] == failed
    assert all(out[i] == i * i for i in range(30) if i not in failed)


def test_chunk_error_is_raised_without_return_exceptions():
    with pytest.raises(pp.StageError) as caught:
        [x for unit in _window().units(iter(range(30))) for x in unit]
    assert caught.value.index == 3


def test_a_whole_chunk_failure_fails_each_element_with_its_index():
    window = MapWindow(
        # a lone item's error carries its index, as the engine's job sets it; a chunk's does not
        lambda v, i: _done(pp.WorkerDied("st", "gone", index=None if isinstance(v, Chunk) else i)),
        window=2,
        chunk_size=lambda: 3,
        return_exceptions=True,
    )
    out = [x for unit in window.units(iter(range(6))) for x in unit]
    assert [type(x) for x in out] == [pp.WorkerDied] * 6 and [x.index for x in out] == list(range(6))


class _InterruptedWait(Future):  # type: ignore[type-arg]
    """A pending future whose wait is interrupted, as Ctrl-C interrupts the consumer."""

    def result(self, timeout: float | None = None) -> Any:
        raise KeyboardInterrupt


def test_an_interrupted_wait_cancels_every_unit_in_flight_the_awaited_one_included():
    futures: list[Future[Any]] = []

    def pending(value: Any, index: int) -> Future[Any]:
        if index == 0:
            return _done(value)  # the first result tells the window how large results are
        futures.append(_InterruptedWait())
        return futures[-1]

    units = MapWindow(pending, window=4).units(iter(range(10)))
    assert list(next(units)) == [0]
    with pytest.raises(KeyboardInterrupt):
        next(units)
    assert len(futures) == 4 and all(f.cancelled() for f in futures)


def test_units_of_trivial_items_are_not_cut_to_a_quarter_of_a_replicas_share():
    """A quarter share keeps the replicas balanced; a unit of no-ops (20 ns each) takes less
    than `_BALANCE_SECONDS` whole, so it gets the full size: fewer units, less parent work."""
    assert chunk_size([2e-8], 2, 20_000) == 4096
    assert chunk_size([1e-6], 2, 20_000) == 2500  # 4,096 items of 1 µs would: a quarter share
    assert chunk_size([2e-8], 2, 2_000) >= 2_000  # one unit: 40 µs of work is not worth two
    assert chunk_size([None], 2, 20_000) == 1
