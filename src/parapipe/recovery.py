"""Journaled submission: one driver, with one set of rules, for ``Engine.map`` and service jobs.

`JournaledRunner` sends an item to the engine and records its life: *running* when sent and
before each retry (a worker death or a timeout; the attempt log shows them), then *done* or
*failed*. A failure is marked retryable when it was a `WorkerDied` or `TaskTimeout` (a rerun may
succeed), final when the user's code raised. `JournaledMap` adds what ``map`` needs on top: keys
are added in batches, and a rerun answers done and failed items from the journal.

Writes are queued to one writer thread per runner, which applies what has gathered in one
transaction (`Journal.apply`): the pool's reader threads only route results, they never touch
the disk. The guarantee: the future the caller gets is resolved by the writer only after the
item's final state is committed, so a result the caller saw is always in the journal, and a
kill -9 of the parent at any moment leaves nothing reported done that a rerun would redo. What
the caller never saw may be done in the journal (a rerun answers it from there) or still
*running* (a rerun runs it again).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from .errors import ItemError, JournalError, ResultLost, StageFailed, TaskTimeout, WorkerDied
from .journal import JobStore, Journal, Record, State, Write

__all__ = ["JournaledMap", "JournaledRunner", "Keys", "journaled_map", "open_store", "retryable"]

log = logging.getLogger("parapipe")

KeyFn = Callable[[Any], str]
Keys = KeyFn | Iterable[str] | None
EngineSubmit = Callable[[Any, str, "int | None", "Callable[[], None] | None"], "Future[Any]"]
"""``submit(item, key, index, on_retry)``: the engine's way in (``Engine._submit_job``)."""

_WRITE_BATCH = 1024
"""Most writes in one transaction; more would hold the journal's lock against readers."""
_ADD_BATCH = 256
"""Keys ``map`` adds per transaction: the items are read this far ahead of the window."""


_NOT_THE_ITEMS_FAULT = (StageFailed, ResultLost)
"""Failures a rerun retries without being asked: the stage was down (the item never ran), or
the result was lost on its way back. The item itself did nothing wrong."""


def retryable(error: BaseException) -> bool:
    """Whether a rerun may succeed: the worker died or timed out, or the item never got its
    chance, rather than the code raising."""
    return isinstance(error, (WorkerDied, TaskTimeout, *_NOT_THE_ITEMS_FAULT))


def open_store(journal: str | os.PathLike[str] | JobStore, namespace: str) -> tuple[JobStore, Journal | None]:
    """The store to use, and the `Journal` we opened for it (to close), if we did.

    A journal ``map`` opens keeps results of any size: it is where a resume reads them from.
    """
    if isinstance(journal, (str, os.PathLike)):
        opened = Journal(journal, run=namespace, max_result_bytes=None)
        return opened, opened
    return journal, None


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
    are applied and a journal opened here is closed. Close the map's window first, so that
    nothing is left in flight to record."""
    store, opened = open_store(journal, namespace)
    runner = JournaledRunner(store, submit)
    try:
        journaled = JournaledMap(runner, key, retry_failed=retry_failed)
        yield journaled.feed(items), journaled
    finally:
        runner.close()
        if opened is not None:
            opened.close()


_Then = Callable[["int | JournalError"], None]
_STOP = object()


class _Writer:
    """One daemon thread applying queued writes, everything gathered in one transaction.

    After `close`, writes are dropped: their items stay as the journal last saw them (running),
    and a rerun runs them again.
    """

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self.failure: str | None = None
        """Why the thread stopped before `close`, if it did; its owner reports itself not ready."""
        self._thread = threading.Thread(target=self._loop, name=f"parapipe-journal-{store.run}", daemon=True)
        self._thread.start()

    def put(self, write: Write | Callable[[], Write], then: _Then | None = None) -> None:
        """Queue a write (or a function making it on the writer thread); ``then`` gets its answer."""
        if not self._closed:
            self._queue.put((write, then))

    def close(self) -> None:
        """Apply everything queued so far, then stop the thread. Idempotent."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # supervised: recorded for readiness, never silent
            self.failure = f"the journal writer stopped: {type(exc).__name__}: {exc}"
            self._closed = True
            log.critical("%s", self.failure, exc_info=True)
            raise

    def _serve(self) -> None:
        while True:
            entries = [self._queue.get()]
            while len(entries) < _WRITE_BATCH:
                try:
                    entries.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in entries
            self._apply([e for e in entries if e is not _STOP])
            if stop:
                return

    def _apply(self, entries: list[tuple[Write | Callable[[], Write], _Then | None]]) -> None:
        writes = [write if isinstance(write, Write) else write() for write, _ in entries]
        answers: list[int | JournalError]
        try:
            answers = self._store.apply(writes) if writes else []
        except JournalError as exc:  # the file itself failed (disk full, closed): every write did
            log.error("%s", exc)
            answers = [exc] * len(writes)
        except Exception:  # a value the journal cannot encode (too deep): apply them one by one
            answers = [self._apply_alone(w) for w in writes]
        answers = [
            self._unstorable(w, a) if isinstance(a, JournalError) else a for w, a in zip(writes, answers, strict=True)
        ]
        for (_, then), answer in zip(entries, answers, strict=True):
            if then is not None:
                try:
                    then(answer)
                except Exception:  # one caller's callback must not stop every later write
                    log.exception("a journal write's callback raised")

    def _apply_alone(self, write: Write) -> int | JournalError:
        try:
            return self._store.apply([write])[0]
        except Exception as exc:
            return JournalError(f"cannot store the outcome of {write.key!r}: {type(exc).__name__}: {exc}")

    def _unstorable(self, write: Write, refused: JournalError) -> int | JournalError:
        """A result the journal refused fails its item with that reason, so the item does not
        stay *running* for ever (and run again on every restart); other refusals stand."""
        if write.state is not State.DONE:
            return refused
        error = {"type": "ResultNotStorable", "message": f"the result could not be stored: {refused}"}
        try:
            self._store.apply([Write(write.key, State.FAILED, error=error, retryable=False)])
        except Exception as exc:
            log.error("item %r: %s, and its failure could not be recorded either: %s", write.key, refused, exc)
        return refused


class JournaledRunner:
    """Submits items to the engine under a journal key and records their life (module docstring).

    Args:
        store: the journal; every key must have been added to it.
        submit: the engine's ``submit(item, key, index, on_retry)``.
        prepare: turns a result into what is stored and given to the caller (the service makes
            it JSON); an exception it raises fails the item (stored with its ``to_dict()``).
        describe: the stored error of a failure that is not an `ItemError` (a failed stage);
            None leaves such an item running in the journal, so a rerun runs it again.
    """

    def __init__(
        self,
        store: JobStore,
        submit: EngineSubmit,
        *,
        prepare: Callable[[Any], Any] | None = None,
        describe: Callable[[BaseException], Mapping[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.engine_submit = submit
        self._prepare = prepare
        self._describe = describe
        self._writer = _Writer(store)

    def submit(self, item: Any, key: str, index: int | None = None) -> Future[Any]:
        """The item's future, resolved once its final state is in the journal."""
        outer: Future[Any] = Future()
        inner = self.engine_submit(item, key, index, lambda: self._writer.put(Write(key, State.RUNNING)))
        # Queued once the engine took the item (one it refused is not marked running), and
        # before the outcome's write, which the callback below queues.
        self._writer.put(Write(key, State.RUNNING))
        outer.add_done_callback(lambda f: f.cancelled() and inner.cancel())
        inner.add_done_callback(lambda f: self._finished(key, f, outer))
        return outer

    def cancel(self, key: str, future: Future[Any]) -> Future[int | JournalError] | None:
        """Cancel a future `submit` gave and record the item cancelled; None if it already
        finished. The returned future is answered once the write is applied (or refused)."""
        if not future.cancel():
            return None
        written: Future[int | JournalError] = Future()
        self._writer.put(Write(key, State.CANCELLED), written.set_result)
        return written

    def close(self) -> None:
        """Apply the queued writes and stop the writer; later outcomes are not recorded."""
        self._writer.close()

    @property
    def failure(self) -> str | None:
        """Why the writer thread stopped unasked (None while it runs): outcomes are no longer recorded."""
        return self._writer.failure

    def _finished(self, key: str, inner: Future[Any], outer: Future[Any]) -> None:
        """In the reader thread: queue the outcome's write; the writer resolves ``outer``."""
        if inner.cancelled():
            outer.cancel()  # nothing written: the item stays running, a rerun runs it
            return
        error = inner.exception()
        if error is not None and not isinstance(error, ItemError) and self._describe is None:
            _resolve(outer, error)
            return
        outcome: list[Any] = []  # the value or error the caller gets, set by the writer

        def write() -> Write:
            if error is not None:
                outcome.append(error)
                return self._failure(key, error)
            try:
                value = self._prepare(inner.result()) if self._prepare is not None else inner.result()
            except Exception as bad:  # prepare's refusal is this item's failure, never the writer's
                outcome.append(bad)
                return Write(key, State.FAILED, error=_error_dict(bad), retryable=False)
            outcome.append(value)
            return Write(key, State.DONE, value)

        def then(answer: int | JournalError) -> None:
            _resolve(outer, answer if isinstance(answer, JournalError) else outcome[0])

        self._writer.put(write, then)

    def _failure(self, key: str, error: BaseException) -> Write:
        if isinstance(error, ItemError):
            return Write(key, State.FAILED, error=error, retryable=retryable(error))
        assert self._describe is not None
        return Write(key, State.FAILED, error=self._describe(error), retryable=False)


def _error_dict(error: Exception) -> dict[str, Any]:
    to_dict = getattr(error, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    return {"type": type(error).__name__, "message": str(error) or type(error).__name__}


def _resolve(future: Future[Any], outcome: Any) -> None:
    if future.set_running_or_notify_cancel():
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class JournaledMap:
    """``map``'s ``submit(item, index)`` over a `JournaledRunner`: done and failed items are
    answered from the journal, the rest run and are recorded.

    `feed` must wrap the items ``map`` reads: it adds their keys to the journal in batches and
    remembers each one's record, in order, for the ``submit`` call that follows.

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

    def feed(self, items: Iterator[Any]) -> Iterator[Any]:
        index = 0
        while batch := list(itertools.islice(items, _ADD_BATCH)):
            keys = [self._key(item, index + k) for k, item in enumerate(batch)]
            existing = self._runner.store.add(keys)
            self._known.extend((k, existing.get(k)) for k in keys)
            index += len(batch)
            yield from batch

    def __call__(self, item: Any, index: int) -> Future[Any]:
        key, record = self._known.popleft()
        if record is None or record.state in (State.QUEUED, State.RUNNING):
            return self._runner.submit(item, key, index)
        if record.state is State.DONE:
            if record.result_stored:
                return _answered(record.result)
            # Done, but its result was too large for this journal to keep: compute it again for
            # the caller; the journal already says done (final), so it is not touched.
            return self._runner.engine_submit(item, key, index, None)
        if record.state is State.FAILED:
            error = record.item_error()
            assert error is not None
            if self._retry_failed or isinstance(error, _NOT_THE_ITEMS_FAULT):
                return self._runner.submit(item, key, index)
            error.index = index
            return _answered(error)
        cancelled = f"item {key!r} was cancelled in journal namespace {record.run!r}; use another key or namespace"
        return _answered(JournalError(cancelled))

    def _key(self, item: Any, index: int) -> str:
        if self._key_fn is not None:
            return str(self._key_fn(item))
        if self._keys is not None:
            return str(next(self._keys))
        return str(index)


def _answered(outcome: Any) -> Future[Any]:
    future: Future[Any] = Future()
    _resolve(future, outcome)
    return future
