"""How an actor runs one message's items: one message at a time, or, for ``concurrency=N`` and
``async def process`` stages, up to N messages at once (the actor is threaded, Ray's
``max_concurrency=N``, and the driver keeps N messages in flight per actor).

A threaded stage runs each message on a thread of the actor; an ``async`` stage runs it as a
task of one event loop that the actor keeps running in a thread of its own, the loop its async
``setup()`` ran on (so what setup() created for that loop, a client session, works in
``process``). Timeouts are the actor's to enforce, as in a local concurrent worker
(`parapipe.worker.concurrent`): the driver cannot kill an actor for one of its N items. An
async item is cancelled at its deadline; a thread cannot be, so its item is answered with the
timeout and the thread runs on.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from .. import transport
from ..batching import check_batch_result
from ..worker import protocol
from ..worker.execute import Errors, run_batch, run_one

__all__ = ["ItemRunner", "runner_for"]

Rows = list[tuple[int, Any]]


def _as_is(value: Any) -> Any:
    """Results go back as they are: Ray moves large buffers through its object store."""
    return value


class ItemRunner:
    """One message at a time, in the calling thread (the actor's only one)."""

    def __init__(self, stage: Any) -> None:
        self.stage = stage
        self.retry_on: Errors = tuple(stage.retry_on)

    def run(self, kind: int, rows: Rows) -> list[protocol.Result]:
        if kind == protocol.BATCH:
            return run_batch(self.stage, rows, self.retry_on, _as_is)
        return [run_one(self.stage, tid, item, self.retry_on, _as_is) for tid, item in rows]

    def complete(self, value: Any) -> Any:
        """``value``, awaited first when ``teardown`` was ``async def``."""
        return asyncio.run(value) if inspect.iscoroutine(value) else value

    def close(self) -> None:
        """Nothing runs on its own."""


class _Threaded(ItemRunner):
    """Each message on a thread; the actor's call waits for it up to the stage's timeout."""

    def __init__(self, stage: Any) -> None:
        super().__init__(stage)
        self._pool = ThreadPoolExecutor(stage.concurrency, thread_name_prefix="parapipe-item")

    def run(self, kind: int, rows: Rows) -> list[protocol.Result]:
        timeout = self.stage.timeout
        if not timeout:
            return super().run(kind, rows)
        future = self._pool.submit(super().run, kind, rows)
        try:
            return future.result(timeout)
        except FutureTimeout:
            now = time.monotonic()
            why = protocol.timed_out(timeout, "abandoned (its thread runs on until the call returns)")
            return [(tid, False, why, now, now, 0.0) for tid, _ in rows]

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class _Async(ItemRunner):
    """Each message as a task of the stage's event loop, which runs in a thread of its own."""

    def __init__(self, stage: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(stage)
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="parapipe-loop", daemon=True)
        self._thread.start()

    def run(self, kind: int, rows: Rows) -> list[protocol.Result]:
        return asyncio.run_coroutine_threadsafe(self._rows(kind, rows), self._loop).result()

    def complete(self, value: Any) -> Any:
        """On the stage's own loop, as its setup() ran."""
        if not inspect.iscoroutine(value):
            return value
        return asyncio.run_coroutine_threadsafe(value, self._loop).result()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _rows(self, kind: int, rows: Rows) -> list[protocol.Result]:
        if kind == protocol.BATCH:
            return await self._batch(rows)
        return [await self._one(tid, item) for tid, item in rows]

    async def _one(self, tid: int, item: Any) -> protocol.Result:
        c0, t0 = time.process_time(), time.monotonic()
        ok, value = await self._call(lambda: self.stage.process(transport.unpacked(item)))
        return (tid, ok, value, t0, time.monotonic(), time.process_time() - c0)

    async def _batch(self, rows: Rows) -> list[protocol.Result]:
        if not inspect.iscoroutinefunction(self.stage.process_batch):
            return run_batch(self.stage, rows, self.retry_on, _as_is)
        t0 = time.monotonic()
        items = [transport.unpacked(item) for _, item in rows]
        ok, values = await self._call(lambda: self.stage.process_batch(items))
        if ok:
            try:
                values = check_batch_result(values, len(rows), self.stage.stage_name)
            except Exception as exc:  # a wrong-sized result is the batch's error
                ok, values = False, protocol.ExcInfo.capture(exc, self.retry_on)
        if not ok:
            if self.stage.batch_fallback and len(rows) > 1:
                return [r for row in rows for r in await self._batch([row])]
            values = [values] * len(rows)
        share = (time.monotonic() - t0) / len(rows)
        return [(tid, ok, v, t0, t0 + share, 0.0) for (tid, _), v in zip(rows, values, strict=True)]

    async def _call(self, make: Any) -> tuple[bool, Any]:
        """(ok, value) of one call, cancelled at the stage's timeout; errors become data."""
        timeout = self.stage.timeout
        try:
            return True, await (asyncio.wait_for(make(), timeout) if timeout else make())
        except asyncio.TimeoutError as exc:
            if timeout and isinstance(exc.__context__, asyncio.CancelledError):
                return False, protocol.timed_out(timeout, "cancelled")
            return False, protocol.ExcInfo.capture(exc, self.retry_on)
        except Exception as exc:  # user errors are data for the driver
            return False, protocol.ExcInfo.capture(exc, self.retry_on)


def runner_for(stage: Any, loop: asyncio.AbstractEventLoop | None) -> ItemRunner:
    """The runner of a built stage; ``loop`` is the one its (async) setup() ran on."""
    if stage.is_async:
        return _Async(stage, loop if loop is not None else asyncio.new_event_loop())
    if stage.concurrency > 1:
        return _Threaded(stage)
    return ItemRunner(stage)
