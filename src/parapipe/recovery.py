"""Journaled submission: one driver, with one set of rules, for ``Engine.map``, ``parapipe run``
(``--follow`` too) and service jobs.

`JournaledRunner` sends items to the engine and records their life: *running* when claimed (or
sent, for the service) and before each retry (a worker death or a timeout; the attempt log shows
them), then *done* or *failed*. A failure is marked retryable when it was a `WorkerDied` or
`TaskTimeout` (a rerun may succeed), final when the user's code raised. Cheap items travel as a
`Chunk` (`submit_chunk`): one engine job and one journal write per batch of elements, each
element still recorded on its own. `parapipe.journaled` adds what ``map`` needs on top.

Writes are queued to one writer thread per runner, which applies what has gathered in one
transaction (`Journal.apply`) and renews this runner's leases every third of the lease: the
pool's reader threads only route results, they never touch the disk. The guarantee: the future
the caller gets is resolved by the writer only after the item's final state is committed, so a
result the caller saw is always in the journal, and a kill -9 of the parent at any moment
leaves nothing reported done that a rerun would redo. What the caller never saw may be done in
the journal (a rerun answers it from there) or still *running* (its lease ends, and a rerun or
another runner runs it again). Closing the runner gives back the leases of what it did not
finish (queued again).
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from .errors import ItemError, JournalError, ResultLost, StageFailed, TaskTimeout, WorkerDied
from .journal import JobStore, State, ValueNotStorable, Write, open_journal
from .relay import Relay
from .worker.protocol import Chunk, ChunkResult

__all__ = ["JournaledRunner", "Keys", "open_store", "resolve", "retryable"]

log = logging.getLogger("parapipe")

KeyFn = Callable[[Any], str]
Keys = Any
"""A function of the item, an iterable of keys aligned with the items, or None (positions)."""
EngineSubmit = Callable[[Any, "str | None", "int | None", "Callable[[], None] | None"], "Future[Any]"]
"""``submit(item, key, index, on_retry)``: the engine's way in (``Engine._submit_job``)."""

_WRITE_BATCH = 4096
"""Most writes in one transaction; more would hold the journal's lock against readers."""

NOT_THE_ITEMS_FAULT = (StageFailed, ResultLost)
"""Failures a rerun retries without being asked: the stage was down (the item never ran), or
the result was lost on its way back. The item itself did nothing wrong."""


def retryable(error: BaseException) -> bool:
    """Whether a rerun may succeed: the worker died or timed out, or the item never got its
    chance, rather than the code raising."""
    return isinstance(error, (WorkerDied, TaskTimeout, *NOT_THE_ITEMS_FAULT))


def open_store(journal: str | os.PathLike[str] | JobStore, namespace: str) -> tuple[JobStore, Any]:
    """The store to use, and the journal we opened for it (to close), if we did.

    A journal ``map`` opens keeps results of any size: it is where a resume reads them from.
    """
    if isinstance(journal, (str, os.PathLike)):
        opened = open_journal(journal, run=namespace, max_result_bytes=None)
        return opened, opened
    return journal, None


_Then = Callable[[list["int | Exception"]], None]
_Make = Callable[[], list[Write]]
_STOP = object()


class _Writer:
    """One daemon thread applying queued writes, everything gathered in one transaction, and
    renewing the store's leases while it waits.

    After `close`, writes are dropped: their items stay as the journal last saw them (running),
    and `JournaledRunner.close` gives them back. The thread is supervised: if it ever stops
    before `close`, `failure` says why and its owner reports itself not ready.
    """

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._renew_every = store.lease / 3
        self.failure: str | None = None
        """Why the thread stopped before `close`, if it did."""
        self._thread = threading.Thread(target=self._loop, name=f"parapipe-journal-{store.run}", daemon=True)
        self._thread.start()

    def put(self, writes: list[Write] | _Make, then: _Then | None = None) -> None:
        """Queue writes (or a function making them on the writer thread); ``then`` gets their answers."""
        if not self._closed:
            self._queue.put((writes, then))

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
        renew_at = time.monotonic() + self._renew_every
        while True:
            try:
                entries = [self._queue.get(timeout=max(0.0, renew_at - time.monotonic()))]
            except queue.Empty:
                entries = []
            while entries and len(entries) < _WRITE_BATCH:
                try:
                    entries.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if time.monotonic() >= renew_at:
                self._renew()
                renew_at = time.monotonic() + self._renew_every
            stop = _STOP in entries
            self._apply([e for e in entries if e is not _STOP])
            if stop:
                return

    def _renew(self) -> None:
        try:
            self._store.renew()
        except JournalError as exc:  # the next renewal may succeed; a lease lasts three of them
            log.warning("could not renew journal leases: %s", exc)

    def _apply(self, entries: list[tuple[list[Write] | _Make, _Then | None]]) -> None:
        if not entries:
            return
        groups = [writes if isinstance(writes, list) else writes() for writes, _ in entries]
        flat = [write for group in groups for write in group]
        answers: list[int | Exception]
        try:
            answers = list(self._store.apply(flat)) if flat else []
        except JournalError as exc:  # the database itself failed (disk full, closed): every write did
            log.error("%s", exc)
            answers = [exc] * len(flat)
        except Exception:  # a value the journal cannot encode (too deep): apply them one by one
            answers = [self._apply_alone(w) for w in flat]
        answers = [
            self._unstorable(w, a) if isinstance(a, ValueNotStorable) else a for w, a in zip(flat, answers, strict=True)
        ]
        start = 0
        for (_, then), group in zip(entries, groups, strict=True):
            if then is not None:
                try:
                    then(answers[start : start + len(group)])
                except Exception:  # one caller's callback must not stop every later write
                    log.exception("a journal write's callback raised")
            start += len(group)

    def _apply_alone(self, write: Write) -> int | Exception:
        try:
            return self._store.apply([write])[0]
        except Exception as exc:
            return ValueNotStorable(f"cannot store the outcome of {write.key!r}: {type(exc).__name__}: {exc}")

    def _unstorable(self, write: Write, refused: JournalError) -> int | Exception:
        """A result the journal cannot encode fails its item with that reason, so the item does
        not stay *running* for ever (and run again on every restart). Refused moves (the state
        machine, another runner's lease) stand as they are."""
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

    def submit(self, item: Any, key: str, index: int | None = None, *, claimed: bool = False) -> Future[Any]:
        """The item's future, resolved once its final state is in the journal. ``claimed``:
        the item is already running under this runner's lease (`JobStore.claim`)."""
        inner = self.engine_submit(item, key, index, lambda: self._writer.put([Write(key, State.RUNNING)]))
        if not claimed:
            # Queued once the engine took the item (one it refused is not marked running), and
            # before the outcome's write, which the callback below queues.
            self._writer.put([Write(key, State.RUNNING)])
        outer: Future[Any] = Relay(inner)  # no reference cycle: freed with its item (issue 20)
        inner.add_done_callback(lambda f: self._finished(key, f, outer))
        return outer

    def submit_chunk(self, items: Sequence[Any], keys: Sequence[str], index: int) -> Future[ChunkResult]:
        """Claimed items as one `Chunk`; the future's `ChunkResult` comes once every element's
        outcome is in the journal. A retry of the chunk (its worker died) starts a new attempt
        of every element."""
        keys = list(keys)
        inner = self.engine_submit(
            Chunk(items), None, index, lambda: self._writer.put([Write(k, State.RUNNING) for k in keys])
        )
        outer: Future[ChunkResult] = Relay(inner)
        inner.add_done_callback(lambda f: self._chunk_finished(keys, f, outer))
        return outer

    def cancel(self, key: str, future: Future[Any]) -> Future[int | Exception] | None:
        """Cancel a future `submit` gave and record the item cancelled; None if it already
        finished. The returned future is answered once the write is applied (or refused)."""
        if not future.cancel():
            return None
        written: Future[int | Exception] = Future()
        self._writer.put([Write(key, State.CANCELLED)], lambda answers: written.set_result(answers[0]))
        return written

    def close(self, *, release: bool = True) -> None:
        """Apply the queued writes and stop the writer (later outcomes are not recorded); then,
        with ``release``, give back the items this runner holds but did not finish."""
        self._writer.close()
        if release:
            try:
                self.store.release()
            except JournalError as exc:  # their leases expire instead
                log.warning("could not give back unfinished journal items: %s", exc)

    @property
    def failure(self) -> str | None:
        """Why the writer thread stopped unasked (None while it runs): outcomes are no longer recorded."""
        return self._writer.failure

    def _finished(self, key: str, inner: Future[Any], outer: Future[Any]) -> None:
        """In the reader thread: queue the outcome's write; the writer resolves ``outer``."""
        if inner.cancelled():
            outer.cancel()  # nothing written: the item stays running until released
            return
        error = inner.exception()
        if error is not None and not isinstance(error, ItemError) and self._describe is None:
            resolve(outer, error)
            return
        outcome: list[Any] = []  # the value or error the caller gets, set by the writer

        def write() -> list[Write]:
            if error is not None:
                outcome.append(error)
                return [self._failure(key, error)]
            try:
                value = self._prepare(inner.result()) if self._prepare is not None else inner.result()
            except Exception as bad:  # prepare's refusal is this item's failure, never the writer's
                outcome.append(bad)
                return [Write(key, State.FAILED, error=_error_dict(bad), retryable=False)]
            outcome.append(value)
            return [Write(key, State.DONE, value)]

        def then(answers: list[int | Exception]) -> None:
            resolve(outer, answers[0] if isinstance(answers[0], Exception) else outcome[0])

        self._writer.put(write, then)

    def _chunk_finished(self, keys: list[str], inner: Future[ChunkResult], outer: Future[ChunkResult]) -> None:
        if inner.cancelled():
            outer.cancel()
            return
        error = inner.exception()
        if error is not None and not isinstance(error, ItemError):
            resolve(outer, error)
            return
        if error is None:
            values, errors = inner.result().values, inner.result().errors
        else:  # the chunk failed as one (its stage failed): every element did
            values, errors = [None] * len(keys), {k: copy.copy(error) for k in range(len(keys))}
        writes = [
            self._failure(key, errors[k]) if k in errors else Write(key, State.DONE, values[k])
            for k, key in enumerate(keys)
        ]

        def then(answers: list[int | Exception]) -> None:
            refused = next((a for a in answers if isinstance(a, Exception)), None)
            resolve(outer, refused if refused is not None else ChunkResult(values, errors))

        self._writer.put(writes, then)

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


def resolve(future: Future[Any], outcome: Any) -> None:
    """Set ``outcome`` (a value, or an exception to raise) on ``future`` unless it was cancelled."""
    if future.set_running_or_notify_cancel():
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
