"""Dynamic batching policy: which waiting items form the next batch, and when it must go.

This is Ray Serve's algorithm (``serve/batching.py``) without its event loop. A batch goes
as soon as it is *full*; otherwise it goes once its oldest item has waited ``batch_wait``
seconds, measured from that item's arrival (not from the last arrival, so a steady trickle
cannot postpone a batch forever). Size is counted in items, or in custom units given by a
``cost`` function (audio seconds, tokens).

The class is a pure policy: no threads, no sleeping, and the clock is injected. The
dispatcher that owns the timers and the workers drives it::

    queue.put(item)                        # on every arrival
    while batch := queue.take():           # full batches go at once
        send(batch)
    timer.arm(queue.next_deadline())       # wake up when the oldest item's wait runs out
    ...
    while batch := queue.take(force=True): # on close: flush everything
        send(batch)

Keeping the policy apart from the threads makes every timing rule testable with a fake
clock instead of real waits.
"""

from __future__ import annotations

import math
import numbers
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import BatchSizeMismatch, ConfigError

__all__ = ["BatchQueue", "BatchSizeMismatch", "BatchStats", "check_batch_result"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Waiting:
    item: Any
    arrival: float
    cost: float


class BatchQueue(Generic[T]):
    """FIFO of items waiting to be batched; `take` says whether a batch is ready.

    A batch is the longest run of waiting items, in arrival order, whose total cost stays
    within ``batch_size``; it always holds at least one item, so an item costing more than
    ``batch_size`` forms a batch alone. Items are never split or reordered. Not thread-safe:
    one dispatcher owns it.

    Args:
        batch_size: the most a batch may hold, in items (no ``cost``) or in cost units.
        batch_wait: seconds the oldest waiting item may wait for its batch to fill.
        cost: the size of one item (for example its audio seconds); None counts items.
        clock: monotonic seconds; tests inject a fake one.
    """

    def __init__(
        self,
        batch_size: float,
        batch_wait: float = 0.01,
        *,
        cost: Callable[[T], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_positive("batch_size", batch_size)
        if cost is None and int(batch_size) != batch_size:
            raise ConfigError(f"batch_size={batch_size!r} counts items: give a whole number")
        if not _is_number(batch_wait) or not 0 <= batch_wait < math.inf:
            raise ConfigError(f"batch_wait={batch_wait!r}: give a number of seconds >= 0")
        self._batch_size = batch_size
        self._batch_wait = float(batch_wait)
        self._cost = cost
        self._clock = clock
        self._waiting: deque[_Waiting] = deque()

    def put(self, item: T) -> None:
        """Queue ``item``, stamping its arrival time; its cost is measured once, here."""
        self._waiting.append(_Waiting(item, self._clock(), self._measure(item)))

    def __len__(self) -> int:
        return len(self._waiting)

    def take(self, *, force: bool = False) -> list[T]:
        """Remove and return the next batch if it is ready, else return ``[]``.

        Ready means full (adding the next waiting item would exceed ``batch_size``, or the
        batch already reaches it), or the oldest item has waited ``batch_wait``, or
        ``force`` (used to flush on close).
        """
        if not self._waiting:
            return []
        count, full = self._head_batch()
        if not (full or force or self._clock() >= self._deadline()):
            return []
        return [self._waiting.popleft().item for _ in range(count)]

    def next_deadline(self) -> float | None:
        """Clock time at which the oldest waiting item's batch must go; None when empty.

        A full batch is ready before this time: call `take` after every `put`.
        """
        return self._deadline() if self._waiting else None

    def _deadline(self) -> float:
        return self._waiting[0].arrival + self._batch_wait

    def _head_batch(self) -> tuple[int, bool]:
        """Length of the next batch, and whether waiting longer could not make it bigger."""
        total = 0.0
        for count, waiting in enumerate(self._waiting):
            if count and total + waiting.cost > self._batch_size:
                return count, True
            total += waiting.cost
            if total >= self._batch_size:
                return count + 1, True
        return len(self._waiting), False

    def _measure(self, item: T) -> float:
        if self._cost is None:
            return 1.0
        value = self._cost(item)
        if not _is_number(value) or not 0 <= value < math.inf:
            raise ConfigError(
                f"the batch cost function returned {value!r} for an item; "
                "it must return a finite number >= 0 (for example the item's audio seconds)"
            )
        return float(value)


class BatchStats:
    """Histogram of batch sizes, to tell whether batching pays off.

    Mostly full batches mean the stage is busy and batching helps; mostly size 1 means
    ``batch_wait`` only adds latency. Keeps exact counts per size and power-of-two buckets
    (1, 2, 3-4, 5-8, ...) for a compact display. Not thread-safe: one dispatcher owns it.
    """

    def __init__(self) -> None:
        self._sizes: Counter[int] = Counter()

    def record(self, n: int) -> None:
        """Count one batch of ``n`` items."""
        if n < 1:
            raise ValueError(f"a batch holds at least one item, got {n}")
        self._sizes[n] += 1

    @property
    def batches(self) -> int:
        return sum(self._sizes.values())

    @property
    def items(self) -> int:
        return sum(n * count for n, count in self._sizes.items())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary: totals, mean size, exact counts and power-of-two buckets."""
        batches = self.batches
        return {
            "batches": batches,
            "items": self.items,
            "mean_size": self.items / batches if batches else 0.0,
            "exact": {str(n): self._sizes[n] for n in sorted(self._sizes)},
            "buckets": self._buckets(),
        }

    def _buckets(self) -> dict[str, int]:
        if not self._sizes:
            return {}
        top = _bucket_top(max(self._sizes))
        tops = [1 << i for i in range(top.bit_length())]
        counts = dict.fromkeys(tops, 0)
        for n, count in self._sizes.items():
            counts[_bucket_top(n)] += count
        return {_bucket_label(t): counts[t] for t in tops}


def check_batch_result(results: Any, n: int, stage: str) -> list[Any]:
    """Return ``results`` as a list, or raise `BatchSizeMismatch` unless it holds ``n`` items.

    Any iterable is accepted (a generator, a numpy array's rows); a str, bytes or dict is
    refused because iterating it yields characters or keys, never per-item results.
    """
    if isinstance(results, (str, bytes, bytearray, dict)) or not isinstance(results, Iterable):
        raise BatchSizeMismatch(stage, n, None, type(results).__name__)
    as_list = list(results)
    if len(as_list) != n:
        raise BatchSizeMismatch(stage, n, len(as_list))
    return as_list


def _check_positive(name: str, value: Any) -> None:
    if not _is_number(value) or not 0 < value < math.inf:
        raise ConfigError(f"{name}={value!r}: give a number > 0")


def _is_number(value: Any) -> bool:
    """True for ints, floats and numpy scalars; False for bools, which are almost surely a bug."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bucket_top(n: int) -> int:
    """The smallest power of two >= n: the bucket that counts a batch of n."""
    return 1 << (n - 1).bit_length()


def _bucket_label(top: int) -> str:
    return str(top) if top <= 2 else f"{top // 2 + 1}-{top}"
