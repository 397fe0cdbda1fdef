"""The window behind ``Engine.map``: a bounded number of units in flight, outcomes in order.

A *unit* is what one ``submit`` call put in flight: one item, or a `Chunk` of consecutive cheap
items. The window never imports the engine: it is given a ``submit(value, index)`` callable, so
the same loop serves a plain map (the engine's submit) and a journaled one (`recovery`).

Chunks: when a worker dies holding a chunk, the pool splits it and answers with one
`ChunkResult` whose ``errors`` name the elements that failed, so the window only turns each
error into its element's outcome; it never resubmits.

Memory: the parent holds the window's outcomes and nothing per item beyond them, so a map of
millions of items stays as large as its window. Units are sized in bytes as well as in items
(`_UNIT_BYTES`), and a consumed unit is let go before the next one is awaited. The bytes per
result come from the results read: this map's, or before its first unit is read, those of the
last map on the same engine (`ResultSizes`), so only an engine's first map sends one item
alone to learn them.
"""

from __future__ import annotations

import copy
import itertools
import math
import queue
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from .errors import ItemError
from .progress import NO_BAR
from .worker.protocol import Chunk, ChunkResult

__all__ = ["MapWindow", "ResultSizes", "Submit", "chunk_size", "window_size"]

_CHEAP_STAGE_SECONDS = 0.001
"""Stages faster than this per item are chunked: the per-item overhead would dominate."""
_MAP_CHUNK_SECONDS = 0.005
_MAX_MAP_CHUNK = 4096
_BALANCE_SECONDS = 0.0005
"""Work a unit may hold whatever the input's length: the last unit, run by one replica while the
others are idle, costs at most this. A no-op map of 20,000 items then goes in 5 units, not the 8
that a quarter of each replica's share makes: each unit costs the parent ~0.1 ms of CPU
(messages, wake-ups of the reader thread and of the consumer), more than the whole unit's work."""
_UNIT_BYTES = 512 << 10
"""Most result bytes a unit of cheap items should hold. The parent keeps a window of units
(each answered with one message), so this, not the number of items, bounds its memory: 8 units
of 1 KB results hold 4 MiB, not 8 x 4,096 KB, and a cheap stage returning large arrays goes
item by item, so that no more than the window's results are mapped at once."""
_SAMPLE_ITEMS = 8
"""Items of a container result sized to estimate the whole."""

Submit = Callable[[Any, int], "Future[Any]"]
"""``submit(value, index)``: put one item (or a `Chunk` starting at ``index``) in flight."""


def window_size(workers: int) -> int:
    """Units in flight by default: enough to keep every worker's pipe and queue fed."""
    return max(8, 4 * workers)


def chunk_size(costs: Sequence[float | None], replicas: int, total: int | None) -> int:
    """Items per unit: one for real models, thousands for trivial functions, and with a known
    length at most a quarter of a replica's share, so no replica gets the last big chunk alone
    (unless that chunk's work is below `_BALANCE_SECONDS`: then it unbalances nothing).

    ``costs`` are the stages' measured seconds per item (None: not measured yet, so one item).
    """
    slowest = max((cost or 1.0) for cost in costs)
    if slowest >= _CHEAP_STAGE_SECONDS:
        return 1
    per_item = max(slowest, 1e-7)
    size = min(_MAX_MAP_CHUNK, int(_MAP_CHUNK_SECONDS / per_item))
    if total is not None:
        size = min(size, max(math.ceil(total / (4 * replicas)), int(_BALANCE_SECONDS / per_item)))
    return max(1, size)


class ResultSizes:
    """Parent memory per result that the maps of one engine (one graph) measured last.

    A later map starts from it instead of sending one item alone and waiting for its result
    (a round trip per map, a fifth of a 20,000-item no-op map). Its own results replace it as
    soon as its first unit is read; until then it fills only half its window, so a map whose
    results are much larger than the last one's holds at most that many units sized wrongly.
    """

    __slots__ = ("item_bytes",)

    def __init__(self) -> None:
        self.item_bytes: int | None = None


class _Unit:
    """What ``map`` put in flight as one job: one item, or a chunk of consecutive items."""

    __slots__ = ("first", "future", "size")

    def __init__(self, first: int, size: int, future: Future[Any]) -> None:
        self.first = first
        self.size = size
        self.future = future


class MapWindow:
    """Streams ``items`` through ``submit`` with at most ``window`` units in flight.

    Args:
        submit: puts one value in flight and returns its future.
        window: most units in flight at once.
        chunk_size: asked before each unit, so chunks grow once the stages' cost is measured;
            1 sends items one by one. The window caps it so that a unit's results fit
            `_UNIT_BYTES`, as estimated from the outcomes it last read.
        ordered: yield outcomes in input order (else as units complete).
        return_exceptions: yield an `ItemError` in place of a failed item's result.
        bar: anything with ``update(n)``; told of every finished item.
        sizes: what earlier maps of the same graph measured (shared, and updated here); a
            fresh one when None.
    """

    def __init__(
        self,
        submit: Submit,
        *,
        window: int,
        chunk_size: Callable[[], int] = lambda: 1,
        ordered: bool = True,
        return_exceptions: bool = False,
        bar: Any = NO_BAR,
        sizes: ResultSizes | None = None,
    ) -> None:
        self._submit = submit
        self._window = max(1, window)
        self._chunk_size = chunk_size
        self._ordered = ordered
        self._return_exceptions = return_exceptions
        self._bar = bar
        self._sizes = sizes if sizes is not None else ResultSizes()
        self._item_bytes: int | None = None
        """Estimated parent memory per outcome (a result or an error), from the last unit read."""

    def units(self, items: Iterator[Any]) -> Generator[Iterable[Any], None, None]:
        """Each unit's outcomes in turn (a list when nothing failed, the common, fast case).

        Closing the iterator (a ``break``, Ctrl-C) cancels every unit still in flight, the one
        being waited for included.
        """
        done: queue.SimpleQueue[int] = queue.SimpleQueue()
        units: dict[int, _Unit] = {}
        current: _Unit | None = None
        next_unit = next_out = first = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(units) < self._room():
                    batch = Chunk(itertools.islice(items, min(self._chunk_size(), self._fitting())))
                    if not batch:
                        exhausted = True
                        break
                    future = self._submit(batch[0] if len(batch) == 1 else batch, first)
                    if not self._ordered:
                        future.add_done_callback(_signal(done, next_unit))
                    units[next_unit] = _Unit(first, len(batch), future)
                    next_unit += 1
                    first += len(batch)
                if not units:
                    return
                # Ordered: only the next unit frees room in the window, so wait for it alone,
                # not for every completion (each wake-up costs this thread the GIL).
                current = units.pop(done.get() if not self._ordered else next_out)
                next_out += 1
                outcomes = self._expand(current)
                current = None
                yield outcomes
                del outcomes  # consumed: not kept alive while the next unit is awaited
        finally:
            if current is not None:
                current.future.cancel()
            for unit in units.values():
                unit.future.cancel()

    def _room(self) -> int:
        """Units allowed in flight: the window once this map's results were seen; before, half
        of it sized by an earlier map's results, or with none, one unit of one item alone."""
        if self._item_bytes is not None:
            return self._window
        return 1 if self._sizes.item_bytes is None else max(1, self._window // 2)

    def _fitting(self) -> int:
        """Items per unit whose results fit `_UNIT_BYTES`, as far as the results seen tell
        (this map's, else the last map's on the engine); one before any was seen."""
        known = self._item_bytes if self._item_bytes is not None else self._sizes.item_bytes
        if known is None:
            return 1
        return max(1, _UNIT_BYTES // known)

    def _measured(self, item_bytes: int) -> None:
        self._item_bytes = self._sizes.item_bytes = item_bytes

    def _expand(self, unit: _Unit) -> Iterable[Any]:
        self._bar.update(unit.size)
        if unit.size == 1:
            outcome = self._outcome(unit.future)
            self._measured(_result_bytes(outcome))  # an error is held in the window too
            return (outcome,)
        try:
            rows = unit.future.result()
        except ItemError as whole:  # the chunk failed as one (its stage failed): every element did
            self._measured(_result_bytes(whole))
            return [self._failed(_for_element(whole, unit.first + k)) for k in range(unit.size)]
        values = rows.values
        if values:  # a few samples: sizing every result would cost more than a cheap stage
            self._measured(max(_result_bytes(values[k]) for k in {0, len(values) // 2, len(values) - 1}))
        if not rows.errors:
            return rows.values
        return self._chunk_outcomes(unit.first, rows)

    def _chunk_outcomes(self, first: int, rows: ChunkResult) -> Iterator[Any]:
        """Values, with each failed element's error raised (or yielded) in its place."""
        for k, value in enumerate(rows.values):
            if k in rows.errors:
                yield self._failed(_element_error(rows.errors[k], first + k))
            else:
                yield value

    def _outcome(self, future: Future[Any]) -> Any:
        try:
            return future.result()
        except ItemError as exc:
            return self._failed(exc)

    def _failed(self, error: ItemError) -> ItemError:
        if not self._return_exceptions:
            raise error
        return error


def _result_bytes(value: Any) -> int:
    """Rough parent memory held by one result: its own size, plus its items' for a list, tuple
    or dict (sampled: this runs once per unit, on the consumer's thread)."""
    size = _own_bytes(value)
    kind = type(value)
    if kind is list or kind is tuple or kind is dict:
        items = list(itertools.islice(value.values() if kind is dict else value, _SAMPLE_ITEMS))
        if items:
            size += sum(_own_bytes(item) for item in items) * len(value) // len(items)
    return size


def _own_bytes(value: Any) -> int:
    """``sys.getsizeof``, or the buffer's size where larger: an array decoded from a segment is
    a view, which owns no memory in getsizeof's eyes but keeps the segment mapped."""
    size = sys.getsizeof(value, 64)
    if getattr(type(value), "nbytes", None) is not None:
        nbytes = value.nbytes
        if isinstance(nbytes, int):
            size = max(size, nbytes)
    return size


def _signal(done: queue.SimpleQueue[int], unit: int) -> Callable[[Future[Any]], None]:
    """A done-callback that reports ``unit`` finished (for unordered maps)."""
    return lambda future: done.put(unit)


def _element_error(error: ItemError, index: int) -> ItemError:
    """A chunk element's error with its index set (the pool leaves it unset: it sees tasks, not
    positions in a map)."""
    error.index = index
    return error


def _for_element(error: ItemError, index: int) -> ItemError:
    """A copy of a whole chunk's error for one of its elements (each carries its own index)."""
    mine = copy.copy(error)
    mine.index = index
    return mine
