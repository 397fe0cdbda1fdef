"""Parent side of one stage: its worker processes, routing, and supervision.

Data flow (one StagePool per stage, N replicas)::

  caller thread, or another                 StagePool                          worker process i
  pool's reader thread                      ---------                          ----------------
  submit(task) --> Dispatcher -----------> pump(): least-loaded ready replica,
                   (pending, batches)      at most MAX_MSGS messages in flight each,
                                           cheap tasks packed into one message
                                           --> Replica i: send_bytes(TASKS) -----> recv, process, send
                   reader thread i <-- Replica i: recv_bytes() <------------------ RESULTS / LOG / READY
                   |  one blocking waiter per worker: no polling, no extra thread hop
                   |- on_results: retry or deliver each task (a delivery may submit to the next
                   |  stage; those pumps are deferred until the whole message is handled)
                   '- on_exit: the worker died -> start a replacement, retry its tasks alone
                      (so a poison item is blamed narrowly) or fail them with WorkerDied

The pool is the facade and the lock; the policies are collaborators that know nothing of it:
`dispatch.Dispatcher` (what to send where), `ledger.ReplicaLedger` (one replica's state and
ledger), `retry` (blame and the one retry decision), and a `host.ReplicaHost` (where replicas
run: `host.LocalHost`'s processes and pipes, or the Ray backend's actors). Every replica's
ledger and the dispatcher's queues are guarded by ``StagePool._lock``, which is never held while
user callbacks run.

Items are only ever sent to this stage's own workers: a model lives in its workers and nowhere
else. Batching and cancellation happen here in the parent, where every pending task is visible;
that is why the per-worker queue (the pipe) holds at most ``MAX_MSGS`` messages.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from .. import transport
from ..batching import BatchQueue, BatchStats
from ..config import DEFAULT_RETRIES, parse_size
from ..errors import ItemError, StageError, StageFailed, WorkerDied, WorkerStartupError
from ..resources import WorkerBudget
from ..stage import Stage
from . import protocol
from .dispatch import Callback, Job, Task
from .host import ReplicaHost
from .ledger import ReplicaLedger
from .options import dispatcher_for, is_concurrent, parent_times_items
from .protocol import ChunkResult
from .pumps import defer, deferred_pumps
from .restarts import StartupBackoff
from .retry import RetryPolicy, retry_later
from .spawn import STOP_GRACE, Deadlines
from .stats import StageStats, add_gpu_figures, gpu_totals

__all__ = ["Callback", "Job", "StagePool", "Task", "deferred_pumps"]

log = logging.getLogger("parapipe")

_BATCH_TIMER = "batch"
"""Deadline key of the oldest waiting batch item (the other keys are replicas)."""
_RATE_TIMER = "rate"
"""Deadline key of the next item the rate limit lets go."""

Outcome = tuple[Task, bool, Any]


class StagePool:
    """The workers of one stage and the tasks waiting for them; ``host`` runs the workers."""

    def __init__(
        self, stage: Stage, budgets: list[WorkerBudget], host: ReplicaHost[Any], *, retries: int = DEFAULT_RETRIES
    ) -> None:
        self.stage = stage
        self.name = stage.stage_name
        self.budgets = budgets
        self.retries = stage.retries if stage.retries is not None else retries
        self.stats = StageStats()
        self._host = host
        self._arena = host.arena
        self._max_memory = parse_size(stage.max_memory)
        self._policy = RetryPolicy(self.retries, tuple(stage.retry_on))
        batcher = None
        if stage.batched:
            batcher = BatchQueue[Task](stage.batch_size, stage.batch_wait, cost=lambda t: stage.batch_cost(t.item))
        self._dispatch = dispatcher_for(stage, batcher)
        self._concurrent = is_concurrent(stage)
        self._timed = parent_times_items(stage)
        self._lock = threading.Lock()
        self._spawn_lock = threading.Lock()
        self._replicas: list[ReplicaLedger] = []
        self._ids = itertools.count()
        self._closing = False
        self._started = False
        self._failed: str | None = None
        self._backoff = StartupBackoff(self._spawn, self._fail_stage)
        needs_timer = self._timed or stage.batched or stage.rate_limit is not None
        self._deadlines = Deadlines(self._on_deadline, self.name) if needs_timer else None

    @property
    def batch_stats(self) -> BatchStats | None:
        return self._dispatch.batch_stats

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Spawn every worker without waiting, so all stages load their models at once."""
        self._host.check()  # e.g. a stage's own interpreter, before any worker starts
        for budget in self.budgets:
            self._spawn(budget)

    def wait_ready(self, deadline: float) -> None:
        """Block until every worker ran setup(); raise WorkerStartupError on failure or timeout."""
        for r in list(self._replicas):
            if not r.ready.wait(max(0.0, deadline - time.monotonic())):
                raise WorkerStartupError(
                    f"stage {self.name!r} replica {r.budget.replica} did not finish setup() in time; "
                    "raise the engine's startup_timeout if loading the model is slow"
                )
            if r.state != "ready":
                raise WorkerStartupError(r.startup_message())
        self._started = True

    def repin(self, budgets: list[WorkerBudget]) -> None:
        """Move live workers to new cores and priorities without a restart (models stay loaded)."""
        with self._lock:
            replicas = {r.budget.replica: r for r in self._replicas}
            self.budgets = list(budgets)
            for budget in budgets:
                r = replicas.get(budget.replica)
                if r is None or r.pid is None or (r.budget.cores, r.budget.nice) == (budget.cores, budget.nice):
                    continue
                if self._host.place(r, budget):
                    r.budget = budget
                    r.info["cores"] = budget.cores

    def grow(self, budgets: list[WorkerBudget], deadline: float) -> None:
        """Add replicas to a running stage (``cpus="auto"`` chose more); wait until they are ready."""
        if not budgets:
            return
        self.budgets = self.budgets + budgets
        for budget in budgets:
            self._spawn(budget)
        self.wait_ready(deadline)

    def close(self, *, timeout: float = STOP_GRACE) -> None:
        """Stop every worker (`ReplicaHost.stop_all`), failing the items still queued."""
        with self._spawn_lock, self._lock:  # no replacement can start after this point
            self._closing = True
            orphans = self._dispatch.take_all()
            replicas = list(self._replicas)
        self._backoff.close()
        self._settle([(t, False, WorkerDied(self.name, "engine closed before the item ran")) for t in orphans])
        self._host.stop_all(replicas, timeout)
        for r in replicas:
            if r.thread is not threading.current_thread():
                r.thread.join(timeout=STOP_GRACE)
        if self._deadlines is not None:
            self._deadlines.close()
        self._arena.close()

    # -- submission ----------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        """Queue a task; it is sent now, or when the caller's `deferred_pumps` block ends."""
        task.enqueued = time.monotonic()
        later = defer(self)
        with self._lock:  # one lock round per submit: queue and assign together
            failure = self._failed
            if failure is None:
                sends = self._assign() if self._dispatch.put(task) and not later else []
        if failure is not None:
            self._settle([(task, False, StageFailed(self.name, failure))])
            return
        for send in sends:
            self._host.send(*send)

    def pump(self) -> None:
        """Send what the dispatcher assigns to the ready replicas (safe to call any time)."""
        with self._lock:
            sends = self._assign()
        for send in sends:
            self._host.send(*send)

    def _assign(self) -> list[tuple[ReplicaLedger, int, list[int], list[Task]]]:
        """Under the lock: record what goes to which replica now; the caller sends it after."""
        sends = []
        for a in self._dispatch.assign([r for r in self._replicas if r.state == "ready"]):
            tids = list(itertools.islice(self._ids, len(a.tasks)))
            a.replica.record(tids, a.tasks, a.exclusive)
            sends.append((a.replica, a.kind, tids, a.tasks))  # `ReplicaHost.send`'s arguments
            if self._timed and self._deadlines is not None:
                self._deadlines.arm(a.replica, float(self.stage.timeout or 0))
        for key, delay in ((_BATCH_TIMER, self._dispatch.batch_timer()), (_RATE_TIMER, self._dispatch.rate_timer())):
            if delay is not None and self._deadlines is not None:
                self._deadlines.arm(key, delay)
        return sends

    def unsent(
        self, r: ReplicaLedger, tids: list[int], bad: Sequence[tuple[int, BaseException]], names: list[str]
    ) -> bool:
        """The host encoded a message and is about to write it (`ReplicaLedger.withdraw`): the
        items it could not encode fail; False: nothing is left to write."""
        with self._lock:
            dropped, left = r.withdraw(tids, bad, names)
        why = "item cannot be sent to a worker: {}"
        unsendable = [StageError(self.name, why.format(e), exc_type="ItemNotPicklable") for _, e in dropped]
        self._settle([(t, False, err) for (t, _), err in zip(dropped, unsendable, strict=True)])
        if not left:
            self.pump()
        return left

    # -- what the replicas report (from their reader threads) --------------------------------

    def on_ready(self, r: ReplicaLedger, info: dict[str, Any]) -> None:
        with self._lock:
            r.info = info
            r.state = "ready"
        self._backoff.ready()
        r.ready.set()
        self.pump()

    def on_results(self, r: ReplicaLedger, rows: list[protocol.Result], unmapped: list[str]) -> None:
        now = time.monotonic()
        final: list[Outcome] = []
        failed: list[tuple[Task, Any]] = []
        with self._lock:  # one lock round per message: ledger, timing and counts of successes
            free = r.answered(unmapped, rows[0][0] if rows else None)
            if self._deadlines is not None:
                self._deadlines.disarm(r)
            inflight, stats = r.inflight, self.stats
            for tid, ok, value, t0, t1, cpu in rows:
                task = inflight.pop(tid, None)
                if type(value) is transport.Packed:
                    value.adopt()  # its segments now live as long as some task may send it
                if task is None:
                    continue
                stats.account(task.enqueued, t0, t1, cpu, now, len(value) if ok and type(value) is ChunkResult else 1)
                if ok:
                    stats.count(self.name, task.item, True, value)
                    final.append((task, True, value))
                else:
                    failed.append((task, value))
            self._dispatch.cost = stats.service_ewma
            waiting = len(self._dispatch) > 0  # what is queued later, its submitter assigns
        if free:
            self._arena.recycle(free)
        retry, settle = self._policy.answered(failed, stage=self.name, timeout=self.stage.timeout)  # unlocked
        for task in retry:
            retry_later(task, self._requeue)
        if waiting:
            self.pump()  # refill the worker before waking anyone: it works while we deliver
        with deferred_pumps():
            for task, _, value in final:  # counted above
                self._deliver(task, True, value)
            self._settle(settle)

    def _requeue(self, task: Task) -> None:
        """A retry's backoff ran out (`retry.retry_later`): it goes first, unless the stage closed."""
        with self._lock:
            if self._closing:
                return
            self._dispatch.requeue([task])
        self.pump()

    def on_unreadable(self, r: ReplicaLedger, error: protocol.ExcInfo, key: int | None = None) -> None:
        """The worker could not unpickle a message (its oldest, or the one whose first task id is
        ``key``): a lone item fails (a rerun would meet the same bytes); several go back one by
        one, so only the unreadable one fails."""
        with self._lock:
            tasks, free = r.unreadable(key)
            if self._deadlines is not None:
                self._deadlines.disarm(r)
            if len(tasks) > 1:
                for task in tasks:
                    task.alone = True
                self._dispatch.requeue(tasks)
        self._arena.recycle(free)
        self.pump()
        if len(tasks) == 1:
            msg = f"item cannot be unpickled in the worker: {error.type}: {error.message}"
            self._settle([(tasks[0], False, StageError(self.name, msg, exc_type="ItemNotUnpicklable"))])

    def on_exit(self, r: ReplicaLedger) -> None:
        exitcode, reason = self._host.reap(r)
        with self._lock:
            was_ready = r.state == "ready"
            r.state = "dead"
            if r in self._replicas:
                self._replicas.remove(r)
            blamed, waiting = r.orphans(all_running=self._concurrent)
            closing = self._closing
        if self._deadlines is not None:
            self._deadlines.disarm(r)
        r.ready.set()
        if closing:
            return
        if not was_ready:
            if self._started:  # else wait_ready() reports it to the engine's start()
                self._backoff.failed(r.budget, r.startup_message(exitcode))
            return
        if exitcode != protocol.RECYCLE_EXIT:  # retiring on purpose is routine, not news
            log.warning("stage %r replica %d: %s; replacing it", self.name, r.budget.replica, reason)
        with self._lock:
            self.stats.restarts += 1
        self._spawn(r.budget)
        self._requeue_orphans(blamed, waiting, exitcode)

    def _on_deadline(self, key: ReplicaLedger | str) -> None:
        """A batch's wait ran out (pump it), or an item ran past the stage timeout: kill its
        worker; the exit handler fails the item."""
        if isinstance(key, str):
            self.pump()
            return
        with self._lock:
            if key.state != "ready" or not key.inflight:
                return
            for task in key.inflight.values():
                task.timed_out = True
            key.kill_reason = f"an item ran past the stage's timeout of {self.stage.timeout} s"
        self._host.kill(key)

    def _requeue_orphans(self, blamed: list[Task], waiting: list[Task], exitcode: int | None) -> None:
        """A dead worker's tasks: `RetryPolicy.orphans` decides which go back and which fail."""
        retry, failed = self._policy.orphans(
            blamed, waiting, exitcode, stage=self.name, timeout=self.stage.timeout, max_memory=self._max_memory,
            alone=self._concurrent,
        )  # fmt: skip
        with self._lock:
            self._dispatch.requeue(retry)
        self._settle(failed)
        self.pump()

    # -- worker processes ----------------------------------------------------------------

    def _spawn(self, budget: WorkerBudget) -> None:
        with self._spawn_lock:
            if self._closing:  # a replacement racing with close(): close() would not see it
                return
            r = self._host.start(self, budget)
            with self._lock:
                self._replicas.append(r)
        r.listen()

    def _fail_stage(self, message: str) -> None:
        with self._lock:
            if any(r.state in ("ready", "starting") for r in self._replicas):
                return
            self._failed = message
            orphans = self._dispatch.take_all()
        log.error("stage %r failed: %s", self.name, message)
        self._settle([(task, False, StageFailed(self.name, message)) for task in orphans])

    # -- outcomes ------------------------------------------------------------------------

    def _settle(self, outcomes: list[Outcome]) -> None:
        """Count final outcomes, then deliver them; downstream pumps wait until all are delivered."""
        if not outcomes:
            return
        with self._lock:
            for task, ok, value in outcomes:
                if ok or not task.abandoned:  # a failure whose job already ended reaches no one
                    self.stats.count(self.name, task.item, ok, value)
        with deferred_pumps():
            for task, ok, value in outcomes:
                self._deliver(task, ok, value)

    def _deliver(self, task: Task, ok: bool, value: Any) -> None:
        if not ok and isinstance(value, ItemError):
            value.index = task.index if value.index is None else value.index
            value.key = task.key if value.key is None else value.key
        try:
            task.callback(ok, value)
        except Exception:  # a broken callback must not kill the reader thread
            log.exception("callback for an item of stage %r raised", self.name)

    # -- introspection -------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = [r.row(**self._host.describe()) for r in sorted(self._replicas, key=lambda r: r.budget.replica)]
        return add_gpu_figures(rows)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            inflight = sum(r.held for r in self._replicas)
            snap = self.stats.snapshot(len(self._dispatch), inflight)
            snap["shm_bytes_sent"] = self._arena.bytes_written
            if self.batch_stats is not None:
                snap["batches"] = self.batch_stats.as_dict()
        if any(b.gpus for b in self.budgets):
            snap.update(gpu_totals(self.workers()))
        return snap

    def cost_per_item(self) -> float | None:
        """Smoothed seconds one item takes inside a worker (None before the first result):
        what ``map`` reads to size its chunks."""
        return self.stats.service_ewma
