"""Asynchronous jobs: accepted into the journal first, sent to the engine as soon as it runs.

::

    POST /v1/jobs --> Admission.acquire (429 when full) --> Journal.add(id, payload)   [queued]
                  --> queue --> dispatcher: every queued job, once the engine is up
                                 JournaledRunner.submit(item, id)                  [running]
    outcome --> the runner's writer thread commits done/failed (a batch per transaction)
            --> call_soon_threadsafe --> wake long-polls, release the admission slot

Why no window of our own: `Admission` already bounds accepted work, and a batched stage can only
form full batches from jobs that reach its queue; a window of a couple of jobs per worker gave
batches of about six. A job is *queued* until the engine is up, then *running*.

One driver with ``map``: the runner (`parapipe.recovery`) gives jobs the same rules as a
journaled ``map``: retries after a worker death or a timeout are logged as attempts, such a
failure is marked retryable, a user error is final, and the writes stay off both the event loop
and the pool's routing threads.

A restart loses nothing: `resume` puts every queued and running job of the journal back in the
queue (a running one gets a new attempt); a failed job stays failed. Shutdown leaves jobs the
engine did not finish in their journal state, so the next start resumes them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..engine import Engine
from ..errors import EngineClosed, ItemError, JournalError
from ..journal import Journal, Record, State
from ..recovery import JournaledRunner
from .errors import JobConflict, JobNotFound, Overloaded, error_body, public_error
from .owners import Owners
from .payloads import ByteBudget, to_jsonable

__all__ = ["MAX_INTERRUPTIONS", "Admission", "JobManager", "job_view"]

log = logging.getLogger("parapipe.service")

_FINAL = frozenset({State.DONE, State.FAILED, State.CANCELLED})
MAX_INTERRUPTIONS = 3
"""Attempts after which a job found *running* at start (the server stopped while it ran, maybe
because of it) ends failed instead of running once more: a poison job cannot cycle for ever."""


class Admission:
    """Counts accepted-but-unfinished work (sync runs, jobs, stream items) against one bound.

    Only touched from the event loop thread, so it needs no lock. Resumed jobs are counted with
    `force`: they were accepted before a restart, and accepted work is never refused.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0
        self.rejected = 0

    def acquire(self, retry_after: Callable[[], float]) -> None:
        """Take a slot or raise `Overloaded` (429) with a Retry-After hint (computed only then:
        it reads the engine's statistics, too costly for every request)."""
        if self.inflight >= self.limit:
            self.rejected += 1
            raise Overloaded(
                f"{self.inflight} requests are accepted and unfinished (limit {self.limit}); retry later",
                retry_after=retry_after(),
            )
        self.inflight += 1

    def force(self) -> None:
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1


class JobManager:
    """The journal-backed job queue of one service (see the module docstring)."""

    def __init__(
        self, journal: Journal, admission: Admission, owners: Owners | None = None, budget: ByteBudget | None = None
    ) -> None:
        self.journal = journal
        self._budget = budget if budget is not None else ByteBudget(2**62)
        self._sizes: dict[str, int] = {}
        self.owners = owners if owners is not None else Owners(":memory:")
        self.failure: str | None = None
        """Why the dispatcher stopped unasked, if it did: the service then reports itself not ready."""
        self._admission = admission
        self._queue: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._running: dict[str, Future[Any]] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._wakeup = asyncio.Event()
        self._runner: JournaledRunner | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def resume(self) -> int:
        """Queue every unfinished job of the journal (before the engine is up); returns how many.

        One query reads the jobs with their payloads."""
        pending = []
        for record in self.journal.pending():
            if record.state is State.RUNNING and record.attempts >= MAX_INTERRUPTIONS:
                error = {
                    "type": "JobInterrupted",
                    "message": f"the server stopped {record.attempts} times while this job ran; it is not run again",
                }
                self.journal.mark_failed(record.key, error, retryable=False)
                log.warning("job %s: %s", record.key, error["message"])
                continue
            pending.append(record)
            self._queue[record.key] = record.payload
            self._admission.force()
        if pending:
            log.info("resuming %d unfinished jobs from %s", len(pending), self.journal.path)
        return len(pending)

    def start(self, engine: Engine) -> None:
        """Begin sending jobs to a started engine."""
        self._runner = JournaledRunner(
            self.journal,
            lambda item, key, index, on_retry: engine.submit(item, key=key, on_retry=on_retry),
            prepare=to_jsonable,
            describe=error_body,
        )
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="parapipe-jobs")
        self._task.add_done_callback(self._dispatcher_ended)

    def _dispatcher_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failure = f"the job dispatcher stopped: {task.exception()!r}"
            log.critical("%s", self.failure, exc_info=task.exception())

    def health(self) -> str | None:
        """Why jobs no longer progress (the dispatcher or the journal writer stopped), else None."""
        return self.failure or (self._runner.failure if self._runner is not None else None)

    async def stop(self) -> None:
        """Stop dispatching; jobs left queued or running stay so in the journal, for the next start."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)  # a failure was logged when it happened

    def close(self) -> None:
        """After the engine closed: write the last outcomes, then close the journal."""
        if self._runner is not None:
            self._runner.close()
        self.journal.close()
        self.owners.close()

    def prune(self, ttl: float) -> int:
        """Drop finished jobs' payloads and the jobs that finished over ``ttl`` seconds ago; how many went.

        Runs in a worker thread (`Service` schedules it): it may vacuum the file."""
        gone = self.journal.prune(time.time() - ttl)
        self.owners.forget(gone)
        return len(gone)

    # -- requests ----------------------------------------------------------------------------

    def submit(self, item: Any, retry_after: Callable[[], float], owner: str = "") -> str:
        """Accept a job (or raise `Overloaded`); it is in the journal before this returns."""
        self._admission.acquire(retry_after)
        try:
            return self.accept(item, owner)
        except BaseException:
            self._admission.release()
            raise

    def accept(self, item: Any, owner: str = "", size: int = 0) -> str:
        """Journal and queue a job under an admission slot the caller already holds; ``size``
        bytes (its body's) the caller holds in the byte budget. The job keeps both until it ends."""
        key = uuid.uuid4().hex
        self.journal.add([key], payloads=[item])
        self._sizes[key] = size
        self.owners.set(key, owner)
        self._queue[key] = item
        self._wakeup.set()
        return key

    def get(self, key: str, owner: str | None = None) -> Record:
        """The job's record; ``owner`` (None: an admin) must be the one that submitted it."""
        record = self.journal.get(key)
        if record is None or (owner is not None and self.owners.owner_of(key) != owner):
            raise JobNotFound(f"no job {key!r} on this server for this API key; ids come from POST /v1/jobs")
        return record

    def page(self, owner: str | None, state: State | None, offset: int, limit: int) -> tuple[list[Record], int]:
        """One page of the jobs ``owner`` may see (None: all), oldest first, and how many there are."""
        if owner is None:
            counts = self.counts()
            total = counts.get(state.value, 0) if state is not None else sum(counts.values())
            return self.journal.records(state, offset=offset, limit=limit), total
        records = [r for r in (self.journal.get(k) for k in self.owners.keys(owner)) if r is not None]
        mine = [r for r in records if state is None or r.state is state]
        return mine[offset : offset + limit], len(mine)

    async def wait(self, key: str, timeout: float, owner: str | None = None) -> Record:
        """The job's record once it is final, or as it is after ``timeout`` seconds."""
        record = self.get(key, owner)
        if record.state in _FINAL or timeout <= 0:
            return record
        event = self._waiters.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self.get(key)

    def cancel(self, key: str, owner: str | None = None) -> Record:
        """Cancel a queued or running job; `JobConflict` when it already finished."""
        record = self.get(key, owner)
        if key in self._queue:
            del self._queue[key]
            self.journal.mark_cancelled(key)
            self._settled(key)
            return self.get(key)
        if record.state not in _FINAL and key not in self._running:
            # Unfinished in the journal but held by nobody (its outcome was lost): end it here.
            self.journal.mark_cancelled(key)
            return self.get(key)
        written = self._runner.cancel(key, self._running[key]) if key in self._running and self._runner else None
        # A short wait on the writer thread (one batch), so the answer shows the cancelled state.
        if written is None or isinstance(written.result(), JournalError):
            state = "finishing" if key in self._running else record.state.value
            raise JobConflict(f"job {key!r} is {state} and can no longer be cancelled")
        return self.get(key)

    def counts(self) -> dict[str, int]:
        return {state.value: n for state, n in self.journal.counts().items()}

    # -- dispatch ----------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._closing:
            self._fill()
            await self._wakeup.wait()
            self._wakeup.clear()

    def _fill(self) -> None:
        """Every queued job goes to the engine now: its queues (and batches) are where they wait."""
        while self._queue and not self._closing:
            key, item = self._queue.popitem(last=False)
            try:
                self._launch(key, item)
            except EngineClosed:
                self._queue[key] = item  # shutting down: stays queued for the next start
                self._queue.move_to_end(key, last=False)
                return
            except Exception as exc:  # this job's failure, never the dispatcher's
                log.warning("job %s could not be started: %r", key, exc)
                with contextlib.suppress(JournalError):
                    self.journal.mark_failed(key, error_body(exc), retryable=False)
                self._settled(key)

    def _launch(self, key: str, item: Any) -> None:
        assert self._runner is not None
        future = self._runner.submit(item, key)
        self._running[key] = future
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._finished, key, f))

    def _finished(self, key: str, future: Future[Any]) -> None:
        """On the loop thread, once the job's outcome is in the journal: let waiters see it."""
        del self._running[key]
        if future.cancelled() and self._closing:
            self._admission.release()  # the engine cancelled it on shutdown: it resumes next start
            self._budget.give(self._sizes.pop(key, 0))
            return
        if not future.cancelled() and isinstance(future.exception(), ItemError):
            log.info("job %s failed: %s", key, future.exception())
        self._settled(key)
        self._wakeup.set()

    def _settled(self, key: str) -> None:
        self._admission.release()
        self._budget.give(self._sizes.pop(key, 0))
        event = self._waiters.pop(key, None)
        if event is not None:
            event.set()


def job_view(record: Record, *, with_result: bool = True) -> dict[str, Any]:
    """A job as the API shows it: id, state, attempts, timings, and its result or error."""
    view: dict[str, Any] = {"id": record.key, "state": record.state.value, "attempts": record.attempts}
    if with_result and record.state is State.DONE:
        view["result"] = record.result
        if not record.result_stored:
            view["result_stored"] = False
    if record.error is not None:
        view["error"] = public_error(record.error)
    view["timings"] = _timings(record)
    return view


def _timings(record: Record) -> dict[str, float | None]:
    started, finished = record.started, record.finished
    return {
        "created": record.created,
        "started": started,
        "finished": finished,
        "queued_s": round(started - record.created, 6) if started is not None else None,
        "run_s": round(finished - started, 6) if started is not None and finished is not None else None,
    }
