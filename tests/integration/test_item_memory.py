"""A finished item is freed by reference counting alone: no reference cycle on its path, so
``map`` keeps parent memory flat even with the cycle collector off; and the window holds a
bounded amount of results, not a bounded number of units of thousands (issue 20, item 1)."""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import parapipe as pp
from parapipe.mapper import window_size

from ._stages import echo, fail_on_three, merge_sum, square
from ._stages_memory import kilobyte, zeros


@contextlib.contextmanager
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _freed_on_del(engine: pp.Engine, item: Any) -> bool:
    future = engine.submit(item)
    future.exception()
    ref = weakref.ref(future)
    del future
    # The reader thread may still be on its way out of delivering that result; the next round
    # trip through the same workers is answered only after it is done.
    engine.submit(1).exception()
    return ref() is None


@pytest.mark.parametrize(
    "graph",
    [
        pp.stage(echo),
        pp.Pipeline(pp.stage(square), pp.stage(echo)),
        pp.Parallel(a=pp.stage(square), b=pp.stage(echo), merge=merge_sum),
    ],
    ids=["one stage", "pipeline", "parallel"],
)
def test_a_finished_future_is_freed_without_the_cycle_collector(graph: Any) -> None:
    with pp.Engine(graph) as engine, no_cycle_collector():
        assert _freed_on_del(engine, 2)


def test_a_failed_future_is_freed_without_the_cycle_collector() -> None:
    with pp.Engine(pp.stage(fail_on_three)) as engine, no_cycle_collector():
        assert _freed_on_del(engine, 3)


def test_a_map_left_early_cancels_and_forgets_its_window() -> None:
    """Cancelling is how a job ends too: the engine must drop it then, not hold it until close."""
    with pp.Engine(pp.stage(echo)) as engine, no_cycle_collector():
        results = engine.map(range(1000), max_inflight=8)
        assert next(results) == 0
        del results  # the window's generator closes and cancels the units in flight
        assert not engine._active


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def test_map_with_1kb_results_keeps_parent_memory_flat_without_the_cycle_collector() -> None:
    """Before the fix each finished map unit (up to 4,096 results) lived until the cycle
    collector ran: with it off, a second 200k-item map grew the parent by ~200 MiB."""
    n = 200_000
    with pp.Engine(pp.stage(kilobyte)) as engine, no_cycle_collector():
        for _ in engine.map(range(n)):  # first pass: the allocator reaches its working size
            pass
        before = _rss()
        for _ in engine.map(range(n)):
            pass
        grown = _rss() - before
    assert grown < 16 << 20, f"the parent grew by {grown / 2**20:.0f} MiB over {n} items"


def test_map_peak_memory_with_1kb_results_stays_under_the_aim_without_the_cycle_collector() -> None:
    """The aim is <= 10 MiB of parent growth for 1M items; the window is what grows, so a
    shorter map shows it. Before units were capped in bytes, 8 units of 4,096 results in
    flight made the peak 11-19 MiB here (two replicas: results land faster than they are read)."""
    n = 200_000
    with pp.Engine(pp.stage(kilobyte, replicas=2)) as engine, no_cycle_collector():
        for _ in engine.map(range(n)):  # first pass: the allocator reaches its working size
            pass
        before = peak = _rss()
        for i, _ in enumerate(engine.map(range(n))):
            if i % 64 == 0:
                peak = max(peak, _rss())
    grown = peak - before
    assert grown <= 10 << 20, f"the parent's peak grew by {grown / 2**20:.1f} MiB over {n} items"


def _mapped_segments() -> int:
    with open("/proc/self/maps") as maps:
        return sum("/dev/shm/parapipe-" in line for line in maps)


def test_large_array_results_are_mapped_at_most_a_window_at_once() -> None:
    """A cheap stage returning 1 MiB arrays: each result maps a segment in the parent until it
    is dropped. Before units were capped in bytes, 16 arrays went per unit and 8 units' worth
    were mapped at once; now one array per unit, so the window (+ the one being read) bounds it."""
    with pp.Engine(pp.stage(zeros)) as engine:
        for _ in engine.map([1 << 20] * 16):  # the stage's cost is measured: it is cheap
            pass
        most = 0
        for result in engine.map([1 << 20] * 64):
            assert result.nbytes == 1 << 20
            most = max(most, _mapped_segments())
            del result
    assert most <= window_size(1) + 2, f"{most} results mapped at once"


def test_a_journaled_map_keeps_parent_memory_flat_without_the_cycle_collector(tmp_path: Any) -> None:
    """The journal's future per unit wrapped the engine's with a done-callback on each side, a
    reference cycle: with the collector off, 50k items with 1 KB results grew the parent by
    ~24 MiB (every unit's results kept); now a few MiB, the window."""
    n = 50_000
    with pp.Engine(pp.stage(kilobyte)) as engine, no_cycle_collector():
        for _ in engine.map(range(n), journal=tmp_path / "warm.db"):  # the allocator's working size
            pass
        before = peak = _rss()
        for i, _ in enumerate(engine.map(range(n), journal=tmp_path / "journal.db")):
            if i % 256 == 0:
                peak = max(peak, _rss())
    grown = peak - before
    assert grown <= 10 << 20, f"the parent's peak grew by {grown / 2**20:.1f} MiB over {n} journaled items"
