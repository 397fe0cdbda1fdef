"""A worker that runs many items at once: I/O-bound stages (``concurrency=N``, ``async def process``).

One thread per item is what a thread-pool stage costs, one task per item an async one; either
is far cheaper than a process per call. The serial serve loop of `child` answers messages in
order; here every message is answered when *it* finishes, so the pipe is read by a loop that
only reads (the parent may have ``concurrency`` messages in flight, and its sends must always
find a reader) and answers go out from whichever thread or task finished.

Timeouts: a worker holding many items cannot be killed for one of them. An async item is
cancelled at its deadline; a thread cannot be, so its item is answered with the timeout at
once and the thread's late result is dropped (the thread runs on and holds its slot until the
call returns). Either way the parent turns the answer into the item's `TaskTimeout`.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from .. import transport
from ..batching import check_batch_result
from .execute import Errors, Pack, _packed, run_batch, run_one
from .protocol import BATCH, STOP, UNREADABLE, ExcInfo, Result, dump_results, dumps, timed_out
from .spawn import Deadlines

Send = Callable[[bytes], None]
Retire = Callable[[int], bool]


class Runner:
    """Runs a stage's items ``concurrency`` at a time; owns the event loop of an async stage."""

    def __init__(self, stage: Any) -> None:
        self.stage = stage
        self.loop = asyncio.new_event_loop() if stage.is_async else None

    def complete(self, value: Any) -> Any:
        """``value``, awaited first when ``setup``/``teardown`` was ``async def``."""
        if not inspect.isawaitable(value):
            return value
        loop = self.loop or asyncio.new_event_loop()
        try:
            return loop.run_until_complete(value)
        finally:
            if loop is not self.loop:
                loop.close()

    def serve(self, conn: Connection, send: Send, retire: Retire, encode: Callable[[Any], bytes], pack: Pack) -> bool:
        """Serve until STOP (False) or until ``retire(served)`` (True), as `child._serve_with`."""
        served = _Served(send, encode, self.stage.stage_name)
        if self.loop is not None:
            return self.loop.run_until_complete(_AsyncServer(self.stage, served, pack).serve(conn, retire))
        return _serve_threads(self.stage, conn, served, retire, pack)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


class _Served:
    """Answers each message once (a thread that timed out may still finish), counts answers,
    and numbers the messages received, so an unreadable one can be named to the parent."""

    def __init__(self, send: Send, encode: Callable[[Any], bytes], stage: str) -> None:
        self.send = send
        self._encode = encode
        self._stage = stage
        self._lock = threading.Lock()
        self.idle = threading.Condition(self._lock)
        self._pending: set[int] = set()
        """First task id of every message started and not answered yet."""
        self.running = 0
        self.count = 0
        self.received = 0

    def started(self, rows: list[tuple[int, Any]]) -> None:
        with self._lock:
            self.running += 1
            self._pending.add(rows[0][0])

    def answer(self, results: list[Result], *, finished: bool = True) -> None:
        """Send ``results`` (one whole message's) unless that message was answered already;
        ``finished`` is False for a timeout's answer, whose thread still runs."""
        with self._lock:
            fresh = results[0][0] in self._pending
            self._pending.discard(results[0][0])
            if fresh:
                self.count += len(results)
            if finished:
                self.running -= 1
                if self.running == 0:
                    self.idle.notify_all()
        if fresh:
            self.send(dump_results(results, self._encode, transport.drain_unmapped(), self._stage))

    def wait_idle(self) -> None:
        with self._lock:
            while self.running:
                self.idle.wait()


def _serve_threads(stage: Any, conn: Connection, served: _Served, retire: Retire, pack: Pack) -> bool:
    retry_on: Errors = tuple(stage.retry_on)
    timeout = stage.timeout
    deadlines = None
    if timeout:
        deadlines = Deadlines(lambda tids: served.answer(_late(tids, timeout), finished=False), "items")

    def work(kind: int, rows: list[tuple[int, Any]]) -> None:
        try:
            if kind == BATCH:
                results = run_batch(stage, rows, retry_on, pack)
            else:
                results = [run_one(stage, tid, item, retry_on, pack) for tid, item in rows]
        finally:
            if deadlines is not None:
                deadlines.disarm(tuple(tid for tid, _ in rows))
        served.answer(results)

    with ThreadPoolExecutor(stage.concurrency, thread_name_prefix="parapipe-item") as pool:
        try:
            while (msg := _receive(conn, served)) is not None:
                if msg[0] == STOP:
                    return False
                served.started(msg[1])
                if deadlines is not None:
                    deadlines.arm(tuple(tid for tid, _ in msg[1]), float(timeout))
                pool.submit(work, msg[0], msg[1])
                del msg
                if retire(served.count):
                    return True
            return False
        finally:
            served.wait_idle()
            if deadlines is not None:
                deadlines.close()


def _receive(conn: Connection, served: _Served) -> Any:
    """The next decodable message, or None when the parent hung up. The parent never sends an
    empty message, so every message read here has rows (or is STOP)."""
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return None
        seq, served.received = served.received, served.received + 1
        try:
            return transport.decode(data)
        except Exception as exc:  # the parent fails the message's items; this worker carries on
            served.send(dumps((UNREADABLE, ExcInfo.capture(exc), seq)))


def _late(tids: tuple[int, ...], timeout: float | None) -> list[Result]:
    now = time.monotonic()
    why = timed_out(timeout, "abandoned (its thread runs on until the call returns)")
    return [(tid, False, why, now, now, 0.0) for tid in tids]


class _AsyncServer:
    """The serve loop of an ``async def process`` stage: one task per message."""

    def __init__(self, stage: Any, served: _Served, pack: Pack) -> None:
        self.stage = stage
        self.served = served
        self.pack = pack
        self.retry_on: Errors = tuple(stage.retry_on)

    async def serve(self, conn: Connection, retire: Retire) -> bool:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        reader = threading.Thread(target=self._read, args=(conn, loop, inbox), name="parapipe-inbox", daemon=True)
        reader.start()
        tasks: set[asyncio.Task[None]] = set()
        retired = False
        while (msg := await inbox.get()) is not None and msg[0] != STOP:
            self.served.started(msg[1])
            task = asyncio.ensure_future(self._run(msg[0], msg[1]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            del msg
            if retire(self.served.count):
                retired = True
                break
        if tasks:
            await asyncio.wait(set(tasks))
        return retired

    def _read(self, conn: Connection, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[Any]) -> None:
        msg = _receive(conn, self.served)
        while msg is not None:
            loop.call_soon_threadsafe(inbox.put_nowait, msg)
            if msg[0] == STOP:
                return
            msg = _receive(conn, self.served)
        loop.call_soon_threadsafe(inbox.put_nowait, None)

    async def _run(self, kind: int, rows: list[tuple[int, Any]]) -> None:
        if kind == BATCH:
            results = await self._batch(rows)
        else:
            results = [await self._one(tid, item) for tid, item in rows]
        self.served.answer(results)

    async def _one(self, tid: int, item: Any) -> Result:
        c0, t0 = time.process_time(), time.monotonic()
        ok, value = await self._call(lambda: self.stage.process(transport.unpacked(item)))
        return (tid, ok, value, t0, time.monotonic(), time.process_time() - c0)

    async def _batch(self, rows: list[tuple[int, Any]]) -> list[Result]:
        if not inspect.iscoroutinefunction(self.stage.process_batch):
            return run_batch(self.stage, rows, self.retry_on, self.pack)
        t0 = time.monotonic()
        items = [transport.unpacked(item) for _, item in rows]
        ok, values = await self._call(lambda: self.stage.process_batch(items), packed=False)
        if ok:
            try:
                outcomes = [_packed(self.pack, v) for v in check_batch_result(values, len(rows), self.stage.stage_name)]
            except Exception as exc:  # a wrong-sized result is the batch's error
                ok, values = False, ExcInfo.capture(exc, self.retry_on)
        if not ok:
            if self.stage.batch_fallback and len(rows) > 1:
                return [r for row in rows for r in await self._batch([row])]
            outcomes = [(False, values)] * len(rows)
        share = (time.monotonic() - t0) / len(rows)
        return [(tid, ok_, v, t0, t0 + share, 0.0) for (tid, _), (ok_, v) in zip(rows, outcomes, strict=True)]

    async def _call(self, make: Callable[[], Coroutine[Any, Any, Any]], packed: bool = True) -> tuple[bool, Any]:
        """(ok, value) of one call, cancelled at the stage's timeout; errors become data."""
        timeout = self.stage.timeout
        try:
            value = await (asyncio.wait_for(make(), timeout) if timeout else make())
        except asyncio.TimeoutError as exc:
            if timeout and isinstance(exc.__context__, asyncio.CancelledError):
                return False, timed_out(timeout, "cancelled")
            return False, ExcInfo.capture(exc, self.retry_on)
        except Exception as exc:  # user errors are data for the parent
            return False, ExcInfo.capture(exc, self.retry_on)
        return _packed(self.pack, value) if packed else (True, value)
