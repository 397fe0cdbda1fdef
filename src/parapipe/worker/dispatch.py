"""The queue policy of one stage: which waiting task goes to which replica, and in what message.

Pure: no threads, no processes, no locks (the pool calls it under its lock) and an injected
clock, so it is tested with a fake clock like `BatchQueue`. The pool hands it the replicas that
are ready and gets back what to send; the replicas themselves are anything with the `Slot`
fields, so this module imports nothing of the pool's.

Three decisions live here:

* **message packing**: cheap tasks travel several to a message (about ``_TARGET_MSG_SECONDS``
  of work each), so a no-op stage pays one syscall per message, not per item. Not to be
  confused with a map `Chunk`, which is many items as *one* task.
* **prefetch**: a replica holds up to ``max_msgs`` messages (one running, one waiting in the
  pipe), or only one once items are known to be slow.
* **retries go alone**: a retried task is sent by itself to an idle replica, which takes
  nothing else until it answers, so a second crash blames only that task.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from ..batching import BatchQueue, BatchStats
from .protocol import BATCH, TASKS
from .ratelimit import RateLimit

MAX_MSGS = 2
"""Messages in flight per worker: one being processed, one waiting in the pipe."""
_PREFETCH_BELOW = 0.02
"""Items slower than this (seconds, measured) get no second message: the queue stays here,
so whichever replica frees first takes the next item. A queued long item behind a running one
would leave another replica idle at the end of a run; prefetch saves only a message's latency."""
_MAX_PACK = 256
_TARGET_MSG_SECONDS = 0.002
"""Pack cheap tasks into one message until it carries about this much work."""


class Job(Protocol):
    finished: bool
    on_retry: Callable[[], None] | None


Callback = Callable[[bool, Any], None]


class Task:
    """One item on its way through one stage."""

    __slots__ = ("alone", "attempts", "callback", "enqueued", "index", "item", "job", "key", "timed_out")

    def __init__(
        self,
        item: Any,
        callback: Callback,
        *,
        job: Job | None = None,
        index: int | None = None,
        key: str | None = None,
    ) -> None:
        self.item = item
        self.callback = callback
        self.job = job
        self.index = index
        self.key = key
        self.attempts = 0
        self.alone = False
        """Send it by itself to an idle replica even before its first failed attempt (an
        element of a chunk whose worker died: it shared that death with its neighbours)."""
        self.enqueued = 0.0
        self.timed_out = False

    @property
    def abandoned(self) -> bool:
        return self.job is not None and self.job.finished

    @property
    def goes_alone(self) -> bool:
        return self.alone or self.attempts > 0

    def announce_retry(self) -> None:
        """Tell the job another attempt is coming (the journal records it)."""
        hook = self.job.on_retry if self.job is not None else None
        if hook is not None:
            hook()


class Slot(Protocol):
    """What the dispatcher reads of a replica."""

    @property
    def msgs(self) -> int: ...

    @property
    def held(self) -> int: ...

    @property
    def exclusive(self) -> bool: ...


S = TypeVar("S", bound=Slot)


class Assignment(Generic[S]):
    """One message to send: its tasks, and whether the replica must take nothing else until it
    answers (a task that goes alone). A slotted class: one is made per message."""

    __slots__ = ("exclusive", "kind", "replica", "tasks")

    def __init__(self, replica: S, kind: int, tasks: list[Task], exclusive: bool) -> None:
        self.replica = replica
        self.kind = kind
        self.tasks = tasks
        self.exclusive = exclusive


class Dispatcher:
    """The tasks waiting for a stage's replicas: a FIFO, plus the batch queue of a batched stage.

    Args:
        max_msgs: messages a replica may hold while items are cheap (1 for a stage with a
            timeout: its deadline must time the item, not its wait in the pipe).
        packing: pack cheap tasks into one message (off with a timeout, for the same reason).
        batcher: the batch queue of a batched stage.
        clock: monotonic seconds; tests inject a fake one.
        concurrent: the workers run ``max_msgs`` messages at once (``concurrency``): they always
            get that many, whatever the items cost, and only a task retried after its worker
            died goes alone (an exception, e.g. a ConnectionError, does not take a whole
            worker's concurrency for its retry).
        rate: the stage's ``rate_limit``: messages go no faster than it allows.
    """

    def __init__(
        self,
        *,
        max_msgs: int = MAX_MSGS,
        packing: bool = True,
        batcher: BatchQueue[Task] | None = None,
        clock: Callable[[], float] = time.monotonic,
        concurrent: bool = False,
        rate: RateLimit | None = None,
    ) -> None:
        self.pending: collections.deque[Task] = collections.deque()
        """New tasks in arrival order (of a batched stage: only retried ones, which go alone)."""
        self.batcher = batcher
        self.batch_stats = BatchStats() if batcher is not None else None
        self.cost: float | None = None
        """Smoothed seconds per item in a worker (the pool's measurement); sizes messages."""
        self._max_msgs = max_msgs
        self._packing = packing
        self._clock = clock
        self._batch_due: float | None = None
        self._concurrent = concurrent
        self._rate = rate
        self._rate_due = False

    def __len__(self) -> int:
        return len(self.pending) + (len(self.batcher) if self.batcher is not None else 0)

    def put(self, task: Task) -> bool:
        """Queue a task; False when `assign` could send nothing more than it did last time.

        Tasks were already waiting, so the last `assign` stopped for want of a replica, a rate
        token or an idle replica for a retry, and each of those comes with a pump of its own
        (a result, a worker ready, a timer): a burst of submits then costs an append each, not
        a scan of the replicas. A batched stage's queue is fed here, so it always assigns."""
        self.pending.append(task)
        return len(self.pending) == 1 or self.batcher is not None

    def requeue(self, tasks: Sequence[Task]) -> None:
        """Tasks to try again go first, in their order."""
        self.pending.extendleft(reversed(tasks))

    def take_all(self) -> list[Task]:
        """Empty both queues (on close or stage failure)."""
        tasks = list(self.pending)
        self.pending.clear()
        if self.batcher is not None:
            while self.batcher:
                tasks += self.batcher.take(force=True)
        return tasks

    def prefetch(self) -> int:
        """Messages one replica may hold now."""
        if self._concurrent:
            return self._max_msgs
        return 1 if (self.cost or 0.0) > _PREFETCH_BELOW else self._max_msgs

    def assign(self, ready: Sequence[S]) -> list[Assignment[S]]:
        """What to send now to the ``ready`` replicas: the least loaded first, until every one
        is full or nothing can go (a retried task waits for an idle replica, a batch for its
        deadline)."""
        out: list[Assignment[S]] = []
        if self.batcher is not None:
            self._feed_batcher()
        elif not self.pending:
            return out
        limit = self.prefetch()
        free = [r for r in ready if r.msgs < limit and not r.exclusive]
        msgs = [r.msgs for r in free]
        held = [r.held for r in free]
        while (self.pending or self.batcher) and free:
            open_ = [i for i in range(len(free)) if msgs[i] < limit]
            if not open_:
                break
            i = min(open_, key=lambda i: (msgs[i], held[i]))
            allowed = _MAX_PACK if self._rate is None else self._rate.available(self._clock())
            if allowed < 1:
                self._rate_due = True
                break
            kind, tasks, alone = self._take_message(msgs[i], len(open_), allowed)
            if not tasks:
                break
            if self._rate is not None:
                self._rate.take(len(tasks), self._clock())
            msgs[i] = limit if alone else msgs[i] + 1  # alone: it takes nothing else
            held[i] += len(tasks)
            out.append(Assignment(free[i], kind, tasks, alone))
        return out

    def batch_timer(self) -> float | None:
        """Seconds until the oldest waiting batch item is due, when that item changed since
        the last call (the timer must be re-armed); None when the timer stands as it is."""
        if not self.batcher:
            return None
        due = self.batcher.next_deadline()
        if due == self._batch_due:
            return None
        self._batch_due = due
        return max(0.0, (due or 0.0) - self._clock())

    def rate_timer(self) -> float | None:
        """Seconds until the rate limit lets the next waiting task go, when the last `assign`
        stopped at the limit (the pool pumps again then); None otherwise."""
        if not self._rate_due or self._rate is None:
            return None
        self._rate_due = False
        return self._rate.wait(self._clock())

    def _goes_alone(self, task: Task) -> bool:
        return task.alone if self._concurrent else task.goes_alone

    def _take_message(self, busy: int, nfree: int, allowed: int) -> tuple[int, list[Task], bool]:
        """(kind, tasks, alone) of the next message for a replica with ``busy`` messages."""
        if self.batcher is None or self.pending:  # of a batched stage, pending holds retries
            tasks, alone = self._pack(busy, nfree, allowed)
            return (BATCH if self.batcher is not None else TASKS), tasks, alone
        batch: list[Task] = []
        while not batch and self.batcher:  # a batch of cancelled items only: take the next one
            taken = self.batcher.take()
            if not taken:
                break
            batch = [t for t in taken if not t.abandoned]  # here, not by scanning the whole queue
        if batch and self.batch_stats is not None:
            self.batch_stats.record(len(batch))
        return BATCH, batch, False

    def _feed_batcher(self) -> None:
        """New tasks join the batch queue in arrival order; retried ones stay here, to go alone."""
        assert self.batcher is not None
        retried = collections.deque(t for t in self.pending if self._goes_alone(t))
        for task in self.pending:
            if not self._goes_alone(task) and not task.abandoned:
                self.batcher.put(task)
        self.pending = retried

    def _pack(self, busy: int, nfree: int, allowed: int = _MAX_PACK) -> tuple[list[Task], bool]:
        limit = min(allowed, self._pack_limit(nfree))
        tasks: list[Task] = []
        while self.pending and len(tasks) < limit:
            task = self.pending[0]
            if task.abandoned:
                self.pending.popleft()
                continue
            if self._goes_alone(task):
                if tasks or busy:
                    break
                self.pending.popleft()
                return [task], True
            self.pending.popleft()
            tasks.append(task)
        return tasks, False

    def _pack_limit(self, nfree: int) -> int:
        """Tasks per message: enough for ``_TARGET_MSG_SECONDS`` of work, but never so many
        that a free replica would be left without any."""
        if not self._packing or not self.cost:
            return 1
        by_cost = int(_TARGET_MSG_SECONDS / self.cost)
        by_balance = math.ceil(len(self.pending) / (2 * nfree))
        return max(1, min(_MAX_PACK, by_cost, by_balance))
