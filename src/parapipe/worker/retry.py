"""Who is to blame when an attempt fails, and whether the task gets another one.

One decision (`RetryPolicy.decide`) serves both ways an attempt can fail: the worker answered
with the stage's exception (`RetryPolicy.answered`; its ``retryable`` was decided in the child,
from ``retry_on``), or the worker died or timed out while the task was running
(`RetryPolicy.orphans`; `death_error` says which).

A map `Chunk` whose worker died has no known culprit: any of its elements may have killed it.
`split` turns it into one task per element, each sent alone, so the next death names the one
element that causes it, and gathers their outcomes back into one `ChunkResult`. A poison
element so costs as many worker deaths as a poison item sent on its own (``retries + 1``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import transport
from ..errors import ItemError, StageError, TaskTimeout, TransportError, WorkerDied, describe_exit
from .dispatch import Callback, Task
from .protocol import MEMORY_EXIT, RECYCLE_EXIT, TIMED_OUT, Chunk, ChunkResult, ExcInfo


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    """Attempts after the first."""
    retry_on: tuple[type[BaseException], ...]
    """The stage's ``retry_on``; a timeout is retried only if it lists `TaskTimeout`."""

    def decide(self, task: Task, error: ItemError | ExcInfo) -> bool:
        """An attempt of ``task`` failed with ``error``: count it, and say whether the task goes
        back to the queue (True; its job was told) or fails for good with ``error``."""
        task.attempts += 1
        if isinstance(error, (WorkerDied, TaskTimeout)):
            error.attempts = task.attempts
        if task.attempts > self.retries or not self._retryable(error):
            return False
        task.announce_retry()
        return True

    def answered(
        self, failed: list[tuple[Task, Any]], *, stage: str, timeout: float | None
    ) -> tuple[list[Task], list[tuple[Task, bool, Any]]]:
        """Tasks whose worker answered with an error: ``(to retry, failed for good)``. A timeout
        the worker measured itself (a concurrent stage's) counts as `TaskTimeout`; any other
        error as the stage's `StageError`. Call it outside the pool's lock: a retry tells its job."""
        retry: list[Task] = []
        final: list[tuple[Task, bool, Any]] = []
        for task, info in failed:
            if isinstance(info, ExcInfo) and info.type == TIMED_OUT:
                info = TaskTimeout(stage, info.message, timeout=timeout)
            if self.decide(task, info):
                retry.append(task)
            elif isinstance(info, TaskTimeout):
                final.append((task, False, info))
            else:
                final.append((task, False, StageError.from_exc_info(stage, info)))
        return retry, final

    def orphans(
        self,
        blamed: list[Task],
        waiting: list[Task],
        exitcode: int | None,
        *,
        stage: str,
        timeout: float | None,
        max_memory: int | None,
        alone: bool = False,
    ) -> tuple[list[Task], list[tuple[Task, bool, Any]]]:
        """A dead worker's tasks: ``(back to the queue, failed for good)``. Those that were
        running take the blame (an attempt, or a final error; a chunk is split, its culprit
        unknown); those still waiting in its pipe, or held by a worker that retired, go back as
        they are. ``alone``: a retried death goes alone even where items share a worker."""
        if exitcode == RECYCLE_EXIT:
            waiting, blamed = blamed + waiting, []
        retry: list[Task] = list(waiting)
        failed: list[tuple[Task, bool, Any]] = []
        for task in blamed:
            if is_chunk(task):
                task.timed_out = False
                retry += split(task, stage, self.retries)
                continue
            task.alone = task.alone or alone
            error = death_error(stage, task, exitcode, timeout=timeout, max_memory=max_memory)
            if self.decide(task, error):
                retry.append(task)
            else:
                failed.append((task, False, error))
        return retry, failed

    def _retryable(self, error: ItemError | ExcInfo) -> bool:
        if isinstance(error, ExcInfo):
            return error.retryable
        if isinstance(error, TaskTimeout):
            return any(issubclass(TaskTimeout, t) for t in self.retry_on)
        return not (isinstance(error, WorkerDied) and error.exitcode == MEMORY_EXIT)


BACKOFF_BASE = 0.05
BACKOFF_MAX = 5.0


def backoff(attempts: int) -> float:
    """Seconds before retry number ``attempts`` of an exception listed in ``retry_on``:
    0.05, 0.1, 0.2 ... up to 5 s."""
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, attempts - 1))


def retry_later(task: Task, requeue: Callable[[Task], None]) -> None:
    """Hand ``task`` to ``requeue`` after `backoff` seconds, from a timer thread: an exception
    listed in ``retry_on`` (a refused connection, a throttled API) retried at once would hit
    the same outage, and meanwhile the worker takes other items."""
    timer = threading.Timer(backoff(task.attempts), requeue, (task,))
    timer.daemon = True
    timer.start()


def exit_reason(kill_reason: str | None, exitcode: int | None, max_memory: int | None) -> str:
    """Why a worker ended: what parapipe did, when it did it, else what the exit code hints."""
    if kill_reason is not None:
        return f"parapipe killed it: {kill_reason}"
    if exitcode == MEMORY_EXIT:
        return f"it passed max_memory ({(max_memory or 0) / 2**30:.2f} GiB) during an item and stopped"
    return describe_exit(exitcode)


def death_error(
    stage: str, task: Task, exitcode: int | None, *, timeout: float | None, max_memory: int | None
) -> ItemError:
    """The error of a task that was running when its worker ended."""
    if task.timed_out:
        task.timed_out = False
        return TaskTimeout(stage, timeout=timeout, attempts=task.attempts)
    if exitcode == MEMORY_EXIT:
        msg = f"worker passed max_memory ({(max_memory or 0) / 2**30:.2f} GiB) while processing this item"
        return WorkerDied(stage, msg, exitcode=exitcode, attempts=task.attempts)
    return WorkerDied(stage, exitcode=exitcode, attempts=task.attempts)


def is_chunk(task: Task) -> bool:
    return isinstance(task.item, (Chunk, ChunkResult))


def split(task: Task, stage: str, retries: int) -> list[Task]:
    """One task per live element of a chunk task, to be sent alone; the chunk's callback gets
    one `ChunkResult` when the last of them has an outcome.

    The death they shared counts as an attempt of each (so a poison element dies ``retries + 1``
    times in all, as an item of its own would), but every element gets at least one try alone.
    """
    item = task.item
    values, errors = (item.values, dict(item.errors)) if isinstance(item, ChunkResult) else (list(item), {})
    gather = _Gather(stage, len(values), errors, task.callback)
    task.announce_retry()
    singles = []
    for k, value in enumerate(values):
        if k in errors:
            continue
        single = Task(value, gather.collector(k), job=task.job)  # index stays None: map sets it
        single.attempts = min(1, retries)
        single.alone = True
        single.enqueued = task.enqueued
        singles.append(single)
    gather.check_done()
    return singles


class _Gather:
    """The outcomes of a split chunk's elements, delivered as one `ChunkResult`."""

    __slots__ = ("callback", "errors", "lock", "remaining", "stage", "values")

    def __init__(self, stage: str, n: int, errors: dict[int, ItemError], callback: Callback) -> None:
        self.stage = stage
        self.values: list[Any] = [None] * n
        self.errors = errors
        self.remaining = n - len(errors)
        self.callback = callback
        self.lock = threading.Lock()

    def collector(self, k: int) -> Callback:
        def collect(ok: bool, value: Any) -> None:
            if ok:
                try:
                    value = transport.unpacked(value)  # a chunk carries plain values
                except TransportError as exc:  # its segment is gone: this element's error
                    ok, value = False, StageError(self.stage, str(exc), exc_type="TransportError")
            with self.lock:
                if ok:
                    self.values[k] = value
                else:
                    self.errors[k] = value  # its index stays None: map sets it from the chunk's start
                self.remaining -= 1
            self.check_done()

        return collect

    def check_done(self) -> None:
        with self.lock:
            if self.remaining != 0:
                return
            self.remaining = -1  # deliver once
        self.callback(True, ChunkResult(self.values, self.errors))
