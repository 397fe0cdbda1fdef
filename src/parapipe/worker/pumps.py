"""Deferred pumping: one pump per touched pool after a reader thread delivers a whole message.

A reader thread that delivers a message's results may submit each result to the next stage.
Pumping that stage once after the message (rather than once per result) lets it pack the results
into one message of its own. The deferral is per thread: a caller thread's `submit` pumps at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol


class Pumpable(Protocol):
    def pump(self) -> None: ...


_local = threading.local()


@contextlib.contextmanager
def deferred_pumps() -> Iterator[None]:
    """Inside this block, a pool that `defer`s from this thread is only noted; each noted pool
    is pumped once when the outermost block ends."""
    if getattr(_local, "pools", None) is not None:
        yield
        return
    pools: dict[int, Pumpable] = {}
    _local.pools = pools
    try:
        yield
    finally:
        _local.pools = None
        for pool in pools.values():
            pool.pump()


def defer(pool: Pumpable) -> bool:
    """Note ``pool`` for the end of this thread's `deferred_pumps` block; False outside one
    (the caller pumps now, which lets a submit pump under the lock it already holds)."""
    pools = getattr(_local, "pools", None)
    if pools is None:
        return False
    pools[id(pool)] = pool
    return True
