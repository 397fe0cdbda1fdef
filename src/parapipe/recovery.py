"""Journal-backed ``map``: done items are answered from the journal, the rest run and are recorded.

Rerunning the same call after the parent was killed skips done items (their stored results are
returned), and re-runs queued, running (interrupted) and retryable failed ones. The journal is
written from the future's callback, before the consumer sees the result, so a result the
consumer never received is still in the journal next time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from .errors import ItemError, TaskTimeout, WorkerDied
from .journal import JobStore, Journal, State

KeyFn = Callable[[Any], str]
Keys = KeyFn | Iterable[str] | None


def open_store(journal: str | os.PathLike[str] | JobStore, run: str) -> tuple[JobStore, bool]:
    """The store to use and whether we opened it (and so must close it)."""
    if isinstance(journal, (str, os.PathLike)):
        return Journal(journal, run=run), True
    return journal, False


class JournaledSubmit:
    """Turns ``(item, index)`` into a future, consulting and updating the journal."""

    def __init__(self, store: JobStore, submit: Callable[..., Future[Any]], key: Keys) -> None:
        self.store = store
        self._submit = submit
        self._key_fn = key if callable(key) else None
        self._keys = iter(key) if key is not None and not callable(key) else None

    def _key(self, item: Any, index: int) -> str:
        if self._key_fn is not None:
            return str(self._key_fn(item))
        if self._keys is not None:
            return str(next(self._keys))
        return str(index)

    def __call__(self, item: Any, index: int) -> Future[Any]:
        key = self._key(item, index)
        known = self.store.add([key]).get(key)
        if known is not None and (answer := _stored_outcome(known, index)) is not None:
            return answer
        self.store.mark_running(key)
        future = self._submit(item, key, index, lambda: self.store.mark_running(key))
        future.add_done_callback(lambda f: self._record(key, f))
        return future

    def _record(self, key: str, future: Future[Any]) -> None:
        if future.cancelled():
            return  # stays running: a rerun picks it up
        error = future.exception()
        if error is None:
            self.store.mark_done(key, future.result())
        elif isinstance(error, ItemError):
            self.store.mark_failed(key, error, retryable=isinstance(error, (WorkerDied, TaskTimeout)))


def _stored_outcome(record: Any, index: int) -> Future[Any] | None:
    """A finished future for a done item (or a final failure); None if the item must run."""
    future: Future[Any] = Future()
    if record.state == State.DONE and record.result_stored:
        future.set_result(record.result)
    elif record.state == State.FAILED and not record.retryable:
        error = record.item_error()
        error.index = index
        future.set_exception(error)
    else:
        return None
    return future
