"""``map`` over a journal: claims in batches, chunks of claimed items, answers from the journal,
and waits on items another runner holds.

`JournaledMap.feed` looks up the keys of the items ``map`` reads, many per query, so finished
items are answered from their record without a write. The rest are claimed when the map window
sends them to the engine, a unit (one item, or a `Chunk` of cheap ones) per transaction
(`JobStore.claim`): an item is taken only when this runner is about to run it, so runners
sharing a journal share its items. The claim's answer splits the unit three ways: claimed items
run, items finished meanwhile are answered, and the ones another runner holds go to `_Waiter`,
which asks the journal again every ``poll`` seconds until they are finished there (answered) or
their lease ended (claimed and run here). The wait is a bounded poll because another process's
commit cannot wake this one (SQLite has no notifications); it only runs while some item is held
elsewhere.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from .errors import ItemError, JournalError
from .journal import JobStore, Record, State
from .recovery import NOT_THE_ITEMS_FAULT, EngineSubmit, JournaledRunner, Keys, open_store, resolve
from .relay import Relay
from .worker.protocol import Chunk, ChunkResult

__all__ = ["JournaledMap"]

log = logging.getLogger("parapipe")

_LOOKUP_BATCH = 1024
"""Keys ``map`` looks up per query: the items are read this far ahead of the window."""
_MAX_ANSWERED_UNIT = 4096
"""Most finished items answered as one unit of the map window."""
_MAX_POLL = 0.5
"""Seconds between two looks at items another runner holds (less for short leases)."""


class JournaledMap:
    """``map``'s ``submit(value, index)`` over a `JournaledRunner` (module docstring).

    `feed` must wrap the items ``map`` reads: it looks their keys up and remembers each one's
    record (None: new), in order, for the ``submit`` calls that follow.

    Args:
        runner: submits and records.
        key: the items' keys: a function of the item, or a sequence aligned with the items;
            None uses the item's position.
        retry_failed: run failed items again instead of answering their stored error.
    """

    def __init__(self, runner: JournaledRunner, key: Keys, *, retry_failed: bool = False) -> None:
        self._runner = runner
        self._key_fn = key if callable(key) else None
        self._keys = iter(key) if key is not None and not callable(key) else None
        self._retry_failed = retry_failed
        self._known: deque[tuple[str, Record | None]] = deque()
        self._waiter = _Waiter(self, min(_MAX_POLL, runner.store.lease / 4))

    def feed(self, items: Iterator[Any]) -> Iterator[Any]:
        index = 0
        while batch := list(itertools.islice(items, _LOOKUP_BATCH)):
            keys = [self._key(item, index + k) for k, item in enumerate(batch)]
            found = self._runner.store.lookup(keys)
            self._known.extend((k, found.get(k)) for k in keys)
            index += len(batch)
            yield from batch

    def close(self) -> None:
        self._waiter.close()

    def reclaim(self, record: Record) -> bool:
        """Whether a failed item runs again: when asked, or when it was not the item's fault."""
        return self._retry_failed or isinstance(record.item_error(), NOT_THE_ITEMS_FAULT)

    def __call__(self, value: Any, index: int) -> Future[Any]:
        if not isinstance(value, Chunk):
            key, record = self._known.popleft()
            if not self._final(record):
                record = self._runner.store.claim([key], reclaim=self.reclaim).get(key)
            return self.one(value, key, record, index)
        known = [self._known.popleft() for _ in value]
        wanted = [key for key, record in known if not self._final(record)]
        left = self._runner.store.claim(wanted, reclaim=self.reclaim) if wanted else {}
        if len(wanted) == len(known) and not left:  # the common case: all claimed here
            return self._runner.submit_chunk(value, wanted, index)
        records = [(key, left.get(key) if not self._final(record) else record) for key, record in known]
        combined = _Combined(len(value))
        run = [k for k, (_, record) in enumerate(records) if record is None]
        for k, (item, (key, record)) in enumerate(zip(value, records, strict=True)):
            if record is None:
                continue
            if record.state is State.DONE and record.result_stored:  # a resume: no future per item
                combined.values[k] = record.result
                combined.remaining -= 1
            else:
                combined.add([k], self.one(item, key, record, index + k), chunk=False)
        if run:
            keys = [records[k][0] for k in run]
            combined.add(run, self._runner.submit_chunk([value[k] for k in run], keys, index + run[0]), chunk=True)
        combined.check()
        return combined

    def answered_ahead(self) -> int:
        """How many of the next items are finished (answered from the journal, never run), so
        that ``map`` can send them as one unit: a resume of many done items costs no unit each."""
        count = 0
        for _, record in self._known:
            if count == _MAX_ANSWERED_UNIT or not self._final(record):
                break
            count += 1
        return count

    def _final(self, record: Record | None) -> bool:
        """Whether the item is finished for this map: answered from its record, never claimed."""
        if record is None:
            return False
        return record.state in (State.DONE, State.CANCELLED) or (
            record.state is State.FAILED and not self.reclaim(record)
        )

    def one(self, item: Any, key: str, record: Record | None, index: int) -> Future[Any]:
        """One item's future, given what its claim answered (None: claimed here)."""
        if record is None:
            return self._runner.submit(item, key, index, claimed=True)
        if record.state is State.DONE:
            if record.result_stored:
                return _answered(record.result)
            # Done, but its result was too large for this journal to keep: compute it again for
            # the caller; the journal already says done (final), so it is not touched.
            return self._runner.engine_submit(item, key, index, None)
        if record.state is State.FAILED:
            error = record.item_error()
            assert error is not None
            error.index = index
            return _answered(error)
        if record.state is State.CANCELLED:
            cancelled = f"item {key!r} was cancelled in journal namespace {record.run!r}; use another key or namespace"
            return _answered(JournalError(cancelled))
        return self._waiter.wait(item, key, index)

    def _key(self, item: Any, index: int) -> str:
        if self._key_fn is not None:
            return str(self._key_fn(item))
        if self._keys is not None:
            return str(next(self._keys))
        return str(index)


class _Waiter:
    """Items another runner holds, looked at again every ``poll`` seconds (module docstring)."""

    def __init__(self, owner: JournaledMap, poll: float) -> None:
        self._map = owner
        self._poll = poll
        self._entries: dict[str, tuple[Any, int, Relay[Any]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wait(self, item: Any, key: str, index: int) -> Future[Any]:
        future: Relay[Any] = Relay()  # follows the item's own future once it is answered or claimed
        with self._lock:
            self._entries[key] = (item, index, future)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="parapipe-journal-wait", daemon=True)
                self._thread.start()
        return future

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for _, _, future in self._entries.values():
                future.cancel()
            self._entries.clear()

    def _loop(self) -> None:
        while not self._stop.wait(self._poll):
            with self._lock:
                keys = list(self._entries)
            if keys:
                self._look(keys)

    def _look(self, keys: list[str]) -> None:
        try:
            left = self._map._runner.store.claim(keys, reclaim=self._map.reclaim)
        except JournalError as exc:  # busy or briefly unreachable: look again next time
            log.warning("journal: %s", exc)
            return
        for key in keys:
            record = left.get(key)
            if record is not None and record.state in (State.QUEUED, State.RUNNING):
                continue  # still held elsewhere
            with self._lock:
                item, index, future = self._entries.pop(key)
            if not future.cancelled():
                _chain(self._map.one(item, key, record, index), future)


class _Combined(Future[ChunkResult]):
    """One `ChunkResult` future gathered from the futures of a unit's parts.

    Cancelling it cancels the parts. It holds them only until it has an outcome: each part's
    done-callback refers to it, so holding them longer would be a reference cycle that keeps
    the unit's results until the cycle collector runs (issue 20).
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.values: list[Any] = [None] * n
        self.errors: dict[int, ItemError] = {}
        self.remaining = n
        """Elements without an outcome yet; the caller fills those it knows at once, then
        calls `check`."""
        self._parts: list[Future[Any]] = []
        self._lock = threading.Lock()

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        parts, self._parts = self._parts, []
        for part in parts:
            part.cancel()
        return True

    def add(self, positions: list[int], part: Future[Any], *, chunk: bool) -> None:
        """``part`` answers the unit's elements at ``positions``: a `ChunkResult` when ``chunk``,
        else one item's value or error."""
        self._parts.append(part)
        part.add_done_callback(lambda f: self._landed(positions, f, chunk))

    def _landed(self, positions: list[int], part: Future[Any], chunk: bool) -> None:
        if part.cancelled():
            self.cancel()
            return
        error = part.exception()
        if error is not None and not isinstance(error, ItemError):
            self._parts = []
            resolve(self, error)
            return
        with self._lock:
            if isinstance(error, ItemError):
                self.errors[positions[0]] = error
            elif not chunk:
                self.values[positions[0]] = part.result()
            else:
                rows: ChunkResult = part.result()
                for k, position in enumerate(positions):
                    if k in rows.errors:
                        self.errors[position] = rows.errors[k]
                    else:
                        self.values[position] = rows.values[k]
            self.remaining -= len(positions)
        self.check()

    def check(self) -> None:
        with self._lock:
            finished, self.remaining = self.remaining == 0, self.remaining or -1
        if finished:  # once: remaining is -1 from now on
            self._parts = []
            resolve(self, ChunkResult(self.values, self.errors))


def _chain(source: Future[Any], target: Relay[Any]) -> None:
    """``target`` gets ``source``'s outcome; cancelling ``target`` cancels ``source``."""
    target.follow(source)
    source.add_done_callback(
        lambda f: target.cancel() if f.cancelled() else resolve(target, f.exception() or f.result())
    )


def _answered(outcome: Any) -> Future[Any]:
    future: Future[Any] = Future()
    resolve(future, outcome)
    return future


@contextlib.contextmanager
def journaled_map(
    items: Iterator[Any],
    submit: EngineSubmit,
    journal: str | os.PathLike[str] | JobStore,
    *,
    namespace: str,
    key: Keys,
    retry_failed: bool,
) -> Iterator[tuple[Iterator[Any], Callable[[Any, int], Future[Any]]]]:
    """``map``'s items and ``submit(item, index)`` through the journal; on exit the last writes
    are applied, what this runner still holds is given back, and a journal opened here is
    closed. Close the map's window first, so that nothing is left in flight to record."""
    store, opened = open_store(journal, namespace)
    runner = JournaledRunner(store, submit)
    journaled = JournaledMap(runner, key, retry_failed=retry_failed)
    try:
        yield journaled.feed(items), journaled
    finally:
        journaled.close()
        runner.close()
        if opened is not None:
            opened.close()
