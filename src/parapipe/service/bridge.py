"""`ResultBridge`: the engine's finished futures, handed to the event loop in bursts.

The engine resolves an item's `concurrent.futures.Future` in a worker's reader thread.
``asyncio.wrap_future`` then schedules one callback on the loop per item, each a handle and a
write to the loop's wake-up pipe. A reader thread resolves all the items of one worker message
back to back, so the bridge queues them and wakes the loop once per burst: the first item of a
burst schedules the drain, the others only join the queue the drain empties.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections import deque
from typing import Any

__all__ = ["ResultBridge"]

_Done = tuple["asyncio.Future[Any]", "concurrent.futures.Future[Any]"]


class ResultBridge:
    """Turns engine futures into futures of one event loop (``loop``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._done: deque[_Done] = deque()
        self._scheduled = False

    def watch(self, future: concurrent.futures.Future[Any]) -> asyncio.Future[Any]:
        """A loop future with ``future``'s outcome. Cancelling it does not cancel ``future``: the
        caller decides (`Service.run` cancels the item when its wait ends without a result)."""
        waiter = self.loop.create_future()
        future.add_done_callback(functools.partial(self._finished, waiter))
        return waiter

    def _finished(self, waiter: asyncio.Future[Any], future: concurrent.futures.Future[Any]) -> None:
        """In the thread that resolved ``future``: queue it, and wake the loop if no drain is due."""
        with self._lock:
            self._done.append((waiter, future))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody awaits these results any more
            with self._lock:
                self._done.clear()
                self._scheduled = False

    def _drain(self) -> None:
        """On the loop: settle every queued waiter. Results queued after the swap schedule the next drain."""
        with self._lock:
            done, self._done = self._done, deque()
            self._scheduled = False
        for waiter, future in done:
            if waiter.done():  # its wait timed out or was cancelled
                continue
            if future.cancelled():
                waiter.cancel()
                continue
            exc = future.exception()
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(future.result())
