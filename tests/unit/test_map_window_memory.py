"""What ``map``'s window keeps alive: units sized by their results' bytes, consumed results let
go before the next unit is awaited, and the futures wrapping an item's (named, journaled)
freed without the cycle collector (issue 20)."""

from __future__ import annotations

import gc
import itertools
import weakref
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import numpy

from parapipe.itemkeys import ItemKeys
from parapipe.journaled import _chain, _Combined
from parapipe.mapper import _UNIT_BYTES, MapWindow, ResultSizes
from parapipe.relay import Relay
from parapipe.worker.protocol import Chunk, ChunkResult


def _answering(make: Any, sizes: list[int]) -> Any:
    """A submit that answers at once with ``make(x)`` per element and notes each unit's size."""

    def submit(value: Any, index: int) -> Future[Any]:
        future: Future[Any] = Future()
        if isinstance(value, Chunk):
            sizes.append(len(value))
            future.set_result(ChunkResult([make(x) for x in value], {}))
        else:
            sizes.append(1)
            future.set_result(make(value))
        return future

    return submit


def _run(window: MapWindow, n: int) -> list[Any]:
    return list(itertools.chain.from_iterable(window.units(iter(range(n)))))


def test_units_of_cheap_items_hold_a_bounded_number_of_result_bytes() -> None:
    """The stages' cost asks for 4,096 items per unit; with 1 KB results a unit holds ~500."""
    sizes: list[int] = []
    window = MapWindow(_answering(lambda x: bytes(1024), sizes), window=8, chunk_size=lambda: 4096)
    assert len(_run(window, 50_000)) == 50_000
    assert sizes[0] == 1  # no result seen yet: the first item goes alone, and only it
    assert max(sizes) <= _UNIT_BYTES // 1024 and min(sizes[1:-1]) > 400


def test_a_later_map_starts_from_the_sizes_an_earlier_one_measured() -> None:
    """Only the first map of a graph sends one item alone to learn its results' size: the next
    starts with full units, half its window of them until its own first unit was read."""
    known = ResultSizes()
    first: list[int] = []
    _run(MapWindow(_answering(lambda x: bytes(1024), first), window=8, chunk_size=lambda: 4096, sizes=known), 5_000)
    assert first[0] == 1 and known.item_bytes is not None and known.item_bytes > 1024
    later: list[int] = []
    in_flight_at_first_wait: list[int] = []
    answer = _answering(lambda x: bytes(1024), later)

    class Awaited(Future):  # type: ignore[type-arg]
        def result(self, timeout: float | None = None) -> Any:
            in_flight_at_first_wait.append(len(later))
            return super().result(timeout)

    def submit(value: Any, index: int) -> Future[Any]:
        future = Awaited()
        future.set_result(answer(value, index).result())
        return future

    assert len(_run(MapWindow(submit, window=8, chunk_size=lambda: 4096, sizes=known), 5_000)) == 5_000
    assert later[0] == _UNIT_BYTES // known.item_bytes  # no item alone: a unit as the last map's results allow
    assert in_flight_at_first_wait[0] == 4


def test_array_views_count_with_their_buffer() -> None:
    """An array decoded from a segment is a view (getsizeof ~100 bytes) that keeps 1 MiB mapped:
    one per unit, so the window bounds the mapped arrays."""
    sizes: list[int] = []
    buffer = numpy.zeros(1 << 20, dtype=numpy.uint8)
    window = MapWindow(_answering(lambda x: buffer[:], sizes), window=8, chunk_size=lambda: 4096)
    _run(window, 100)
    assert len(sizes) == 100


class _Box:
    pass


def test_a_consumed_unit_is_let_go_before_the_next_one_is_awaited() -> None:
    boxes: list[weakref.ref[_Box]] = []
    alive_while_waiting: list[int] = []

    class Awaited(Future):  # type: ignore[type-arg]
        def result(self, timeout: float | None = None) -> Any:
            alive_while_waiting.append(sum(ref() is not None for ref in boxes))
            return super().result(timeout)

    def submit(value: Any, index: int) -> Future[Any]:
        future = Awaited()
        future.set_result(_Box())
        return future

    for box in itertools.chain.from_iterable(MapWindow(submit, window=4).units(iter(range(20)))):
        boxes.append(weakref.ref(box))
        del box
    assert alive_while_waiting[1:] == [0] * 19


def test_a_named_items_future_is_freed_without_the_cycle_collector() -> None:
    names = ItemKeys(None, pair=True, return_exceptions=False)
    pending: list[Future[Any]] = [Future()]
    gc.collect()
    gc.disable()
    try:
        items: Iterator[Any] = names.feed(iter(["a"]))
        next(items)
        outer = names.submit(lambda value, index: pending[0])("a", 0)
        pending.pop().set_result(1)
        assert outer.result() == (0, 1)
        ref = weakref.ref(outer)
        del outer
        assert ref() is None
    finally:
        gc.enable()


def test_names_are_not_kept_for_a_journal_that_is_not_there() -> None:
    names = ItemKeys(str, pair=True, return_exceptions=False)
    for _ in names.feed(iter(range(1000))):
        pass
    assert not names._unread


def _freed_without_collector(make: Any) -> bool:
    """Whether the future ``make()`` returns (already answered) dies on ``del`` alone."""
    gc.collect()
    gc.disable()
    try:
        future = make()
        ref = weakref.ref(future)
        del future
        return ref() is None
    finally:
        gc.enable()


def test_a_relay_answered_from_its_source_is_freed_without_the_cycle_collector() -> None:
    def make() -> Future[Any]:
        source: Future[Any] = Future()
        relay: Relay[Any] = Relay(source)
        source.add_done_callback(lambda f: relay.set_result(f.result()))
        source.set_result(1)
        assert relay.result() == 1
        return relay

    assert _freed_without_collector(make)


def test_cancelling_a_relay_cancels_its_source_even_one_followed_later() -> None:
    first: Future[Any] = Future()
    Relay(first).cancel()
    later: Future[Any] = Future()
    relay: Relay[Any] = Relay()
    relay.cancel()
    relay.follow(later)
    assert first.cancelled() and later.cancelled()


def test_a_chained_waiting_item_is_freed_without_the_cycle_collector() -> None:
    def make() -> Future[Any]:
        source: Future[Any] = Future()
        target: Relay[Any] = Relay()
        _chain(source, target)
        source.set_result(2)
        assert target.result() == 2
        return target

    assert _freed_without_collector(make)


def test_a_combined_unit_is_freed_without_the_cycle_collector_and_cancels_its_parts() -> None:
    def make() -> Future[Any]:
        combined = _Combined(3)
        parts: list[Future[Any]] = [Future(), Future()]
        combined.add([0], parts[0], chunk=False)
        combined.add([1, 2], parts[1], chunk=True)
        parts[0].set_result("a")
        parts[1].set_result(ChunkResult(["b", "c"], {}))
        combined.check()
        assert combined.result().values == ["a", "b", "c"]
        return combined

    assert _freed_without_collector(make)
    combined = _Combined(1)
    part: Future[Any] = Future()
    combined.add([0], part, chunk=False)
    combined.cancel()
    assert part.cancelled()
