"""Parent side of one stage: its worker processes, routing, and supervision.

Data flow (one StagePool per stage, N replicas)::

  caller thread, or another                 StagePool                          worker process i
  pool's reader thread                      ---------                          ----------------
  submit(task) --> pending deque --> _assign(): least-loaded ready worker,
                                     at most _MAX_MSGS messages in flight each,
                                     cheap tasks chunked into one message
                                     --> conn_i.send_bytes(TASKS) -----------> recv, process, send
                   reader thread i <-- conn_i.recv_bytes() <------------------- RESULTS / LOG / READY
                   |  one blocking waiter per worker: no polling, no extra thread hop
                   |- resolve each task's callback (which may submit to the next stage;
                   |  those pumps are deferred until the whole chunk is handled)
                   '- EOF: the worker died -> start a replacement, retry its tasks alone
                      (so a poison item is blamed narrowly) or fail them with WorkerDied

Items are only ever sent to this stage's own workers: a model lives in its workers and nowhere
else. Batching and cancellation happen here in the parent, where every pending task is visible;
that is why the per-worker queue (the pipe) holds at most ``_MAX_MSGS`` messages.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import logging
import math
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from typing import Any, Protocol

from .. import transport
from ..batching import BatchQueue, BatchStats
from ..config import DEFAULT_RETRIES, parse_size
from ..errors import (
    ConfigError,
    ItemError,
    StageError,
    StageFailed,
    TaskTimeout,
    WorkerDied,
    WorkerStartupError,
    describe_exit,
)
from ..resources import WorkerBudget, gpu_env, thread_env
from ..stage import Stage
from . import child
from . import protocol as P
from .spawn import STOP_GRACE, Deadlines, environment, stop_process
from .stats import StageStats

log = logging.getLogger("parapipe")

_MAX_MSGS = 2
"""Messages in flight per worker: one being processed, one waiting in the pipe."""
_PREFETCH_BELOW = 0.02
"""Items slower than this (seconds, measured) get no second message: the queue stays here,
so whichever replica frees first takes the next item. A queued long item behind a running one
would leave another replica idle at the end of a run; prefetch saves only a message's latency."""
_MAX_CHUNK = 256
_TARGET_MSG_SECONDS = 0.002
"""Chunk cheap tasks until a message carries about this much work."""
_MAX_STARTUP_FAILURES = 5
"""Replacements in a row whose setup() fails before the stage is declared failed."""
_BATCH_TIMER = "batch"
"""Deadline key of the oldest waiting batch item (worker keys are _Worker objects)."""
_BACKOFF_BASE = 0.2
_BACKOFF_MAX = 10.0


class Job(Protocol):
    finished: bool
    on_retry: Callable[[], None] | None


Callback = Callable[[bool, Any], None]


class Task:
    """One item on its way through one stage."""

    __slots__ = ("attempts", "callback", "enqueued", "index", "item", "job", "key", "timed_out")

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
        self.enqueued = 0.0
        self.timed_out = False

    @property
    def abandoned(self) -> bool:
        return self.job is not None and self.job.finished

    def announce_retry(self) -> None:
        """Tell the job another attempt is coming (the journal records it)."""
        hook = self.job.on_retry if self.job is not None else None
        if hook is not None:
            hook()


class _Worker:
    __slots__ = (
        "budget", "conn", "exclusive", "inflight", "info", "lent", "msgs", "proc", "ready", "segments",
        "send_lock", "sent", "startup_error", "state", "thread",
    )  # fmt: skip

    def __init__(self, budget: WorkerBudget, proc: Any, conn: Any) -> None:
        self.budget = budget
        self.proc = proc
        self.conn = conn
        self.inflight: dict[int, Task] = {}
        self.sent: collections.deque[list[int]] = collections.deque()
        """Task ids per message in send order: the first is the one the worker is running."""
        self.segments: dict[int, list[str]] = {}
        """Shared-memory segments of messages in flight, by first task id."""
        self.lent: set[str] = set()
        """Segments of answered messages that the worker may still map; recycled when it
        reports them unmapped, unlinked if it dies."""
        self.msgs = 0
        self.exclusive = False
        self.state = "starting"
        self.ready = threading.Event()
        self.send_lock = threading.Lock()
        self.info: dict[str, Any] = {}
        self.startup_error: P.ExcInfo | None = None
        self.thread: threading.Thread | None = None


class StagePool:
    """The workers of one stage and the tasks waiting for them."""

    def __init__(
        self,
        stage: Stage,
        budgets: list[WorkerBudget],
        *,
        mp_context: BaseContext,
        retries: int = DEFAULT_RETRIES,
        log_level: int | None = None,
    ) -> None:
        self.stage = stage
        self.name = stage.stage_name
        self.budgets = budgets
        self.retries = stage.retries if stage.retries is not None else retries
        self.stats = StageStats()
        self._ctx = mp_context
        self._log_level = log_level if log_level is not None else logging.getLogger().getEffectiveLevel()
        self._stage_bytes = _pickle_stage(stage)
        self._arena = transport.SegmentArena(spare=True)
        self._encode = functools.partial(transport.encode, arena=self._arena, threshold=P.PIPE_MESSAGE_LIMIT)
        self._max_memory = parse_size(stage.max_memory)
        self._max_msgs = 1 if stage.timeout else _MAX_MSGS  # a deadline must time the item, not its wait
        self._lock = threading.Lock()
        self._spawn_lock = threading.Lock()
        self._pending: collections.deque[Task] = collections.deque()
        self._workers: list[_Worker] = []
        self._ids = itertools.count()
        self._closing = False
        self._started = False
        self._failed: str | None = None
        self._startup_failures = 0
        self._timers: set[threading.Timer] = set()
        self._service_ewma: float | None = None
        self._batcher: BatchQueue[Task] | None = None
        self._batch_due: float | None = None
        self.batch_stats: BatchStats | None = None
        if stage.batched:
            self._batcher = BatchQueue(stage.batch_size, stage.batch_wait, cost=lambda t: stage.batch_cost(t.item))
            self.batch_stats = BatchStats()
        needs_timer = stage.timeout or stage.batched
        self._deadlines = Deadlines(self._on_deadline, self.name) if needs_timer else None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Spawn every worker without waiting, so all stages load their models at once."""
        for budget in self.budgets:
            self._spawn(budget)

    def wait_ready(self, deadline: float) -> None:
        """Block until every worker ran setup(); raise WorkerStartupError on failure or timeout."""
        for w in list(self._workers):
            if not w.ready.wait(max(0.0, deadline - time.monotonic())):
                raise WorkerStartupError(
                    f"stage {self.name!r} replica {w.budget.replica} did not finish setup() in time; "
                    "raise the engine's startup_timeout if loading the model is slow"
                )
            if w.state != "ready":
                raise WorkerStartupError(self._startup_message(w))
        self._started = True

    def repin(self, budgets: list[WorkerBudget]) -> None:
        """Move live workers to new cores without restarting them (their models stay loaded)."""
        with self._lock:
            workers = {w.budget.replica: w for w in self._workers}
            self.budgets = list(budgets)
            for budget in budgets:
                w = workers.get(budget.replica)
                if w is not None and w.budget.cores != budget.cores:
                    w.budget = budget
                    w.info["cores"] = budget.cores
                    child.pin_all_threads(budget.cores, w.proc.pid)

    def grow(self, budgets: list[WorkerBudget], deadline: float) -> None:
        """Add replicas to a running stage (``cpus="auto"`` chose more); wait until they are ready."""
        if not budgets:
            return
        self.budgets = self.budgets + budgets
        for budget in budgets:
            self._spawn(budget)
        self.wait_ready(deadline)

    def close(self, *, timeout: float = STOP_GRACE) -> None:
        """Stop every worker: STOP message, then join, terminate and kill in that order."""
        with self._spawn_lock, self._lock:  # no replacement can start after this point
            self._closing = True
            orphans = self._take_all_queued()
            workers = list(self._workers)
            timers = list(self._timers)
        for timer in timers:
            timer.cancel()
        for t in orphans:
            self._resolve(t, False, WorkerDied(self.name, "engine closed before the item ran"))
        for w in workers:
            self._send_raw(w, P.dumps((P.STOP,)))
        deadline = time.monotonic() + timeout
        for w in workers:
            stop_process(w.proc, deadline)
        for w in workers:
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join(timeout=STOP_GRACE)
        if self._deadlines is not None:
            self._deadlines.close()
        self._arena.close()

    # -- submission ----------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        task.enqueued = time.monotonic()
        with self._lock:
            failure = self._failed
            if failure is None:
                self._pending.append(task)
        if failure is not None:
            self._resolve(task, False, StageFailed(self.name, failure))
            return
        _pump_soon(self)

    def pump(self) -> None:
        with self._lock:
            assignments = self._assign()
        for w, rows, kind in assignments:
            self._send_tasks(w, rows, kind)

    def _assign(self) -> list[tuple[_Worker, list[tuple[int, Task]], int]]:
        out = []
        if self._batcher is not None:
            self._feed_batcher()
        limit = 1 if (self._service_ewma or 0.0) > _PREFETCH_BELOW else self._max_msgs
        while self._pending or self._batcher:
            free = [w for w in self._workers if w.state == "ready" and w.msgs < limit and not w.exclusive]
            if not free:
                break
            w = min(free, key=lambda w: (w.msgs, len(w.inflight)))
            kind, rows = self._take_rows(w, len(free))
            if not rows:
                break  # a retried task waits for an idle worker, a batch for its deadline
            w.msgs += 1
            w.sent.append([tid for tid, _ in rows])
            out.append((w, rows, kind))
            if self.stage.timeout and self._deadlines is not None:
                self._deadlines.arm(w, float(self.stage.timeout))
        if self._batcher and self._deadlines is not None:
            due = self._batcher.next_deadline()
            if due != self._batch_due:  # re-arm only when the oldest waiting item changed
                self._batch_due = due
                self._deadlines.arm(_BATCH_TIMER, max(0.0, (due or 0.0) - time.monotonic()))
        return out

    def _take_rows(self, w: _Worker, nfree: int) -> tuple[int, list[tuple[int, Task]]]:
        if self._batcher is None or (self._pending and self._pending[0].attempts > 0):
            return (P.BATCH if self._batcher is not None else P.TASKS), self._take_chunk(w, nfree)
        batch: list[Task] = []
        while not batch and self._batcher:  # a batch of cancelled items only: take the next one
            taken = self._batcher.take()
            if not taken:
                break
            batch = [t for t in taken if not t.abandoned]  # here, not by scanning the whole queue
        rows = []
        for task in batch:
            tid = next(self._ids)
            w.inflight[tid] = task
            rows.append((tid, task))
        if rows:
            self.batch_stats.record(len(rows))  # type: ignore[union-attr]
        return P.BATCH, rows

    def _feed_batcher(self) -> None:
        """New tasks join the batch queue in arrival order; retried ones stay here, to go alone."""
        assert self._batcher is not None
        retried = collections.deque(t for t in self._pending if t.attempts > 0)
        for task in self._pending:
            if task.attempts == 0 and not task.abandoned:
                self._batcher.put(task)
        self._pending = retried

    def _take_all_queued(self) -> list[Task]:
        """Empty both queues (on close or stage failure); called under the lock."""
        tasks = list(self._pending)
        self._pending.clear()
        if self._batcher is not None:
            tasks += self._batcher.take(force=True)
            while self._batcher:
                tasks += self._batcher.take(force=True)
        return tasks

    def _take_chunk(self, w: _Worker, nfree: int) -> list[tuple[int, Task]]:
        """Retried tasks go alone to an otherwise idle worker so a crash blames only them."""
        limit = self._chunk_limit(nfree)
        rows: list[tuple[int, Task]] = []
        while self._pending and len(rows) < limit:
            task = self._pending[0]
            if task.abandoned:
                self._pending.popleft()
                continue
            if task.attempts > 0:
                if rows or w.msgs:
                    break
                w.exclusive = True
            self._pending.popleft()
            tid = next(self._ids)
            w.inflight[tid] = task
            rows.append((tid, task))
            if w.exclusive:
                break
        return rows

    def _chunk_limit(self, nfree: int) -> int:
        if self._deadlines is not None or not self._service_ewma:
            return 1
        by_cost = int(_TARGET_MSG_SECONDS / self._service_ewma)
        by_balance = math.ceil(len(self._pending) / (2 * nfree))
        return max(1, min(_MAX_CHUNK, by_cost, by_balance))

    def _send_tasks(self, w: _Worker, rows: list[tuple[int, Task]], kind: int) -> None:
        payload = [(tid, task.item) for tid, task in rows]
        try:
            data = self._encode((kind, payload))
        except Exception:  # find and fail the unpicklable items one by one
            data = self._drop_unpicklable(w, payload, kind)
        names = transport.segment_names(data)
        if names:
            with self._lock:
                w.segments[rows[0][0]] = names
        self._send_raw(w, data)

    def _drop_unpicklable(self, w: _Worker, payload: list[tuple[int, Any]], kind: int) -> bytes:
        keep = []
        for tid, item in payload:
            try:
                pickle.dumps(item, P.PROTOCOL)
                keep.append((tid, item))
            except Exception as exc:  # reported as this item's error
                with self._lock:
                    task = w.inflight.pop(tid, None)
                if task is not None:
                    msg = f"item cannot be sent to a worker: {exc}"
                    self._resolve(task, False, StageError(self.name, msg, exc_type="ItemNotPicklable"))
        return self._encode((kind, keep))

    def _send_raw(self, w: _Worker, data: bytes) -> None:
        with w.send_lock:
            try:
                w.conn.send_bytes(data)
            except (OSError, ValueError):
                log.debug("send to %s#%d failed; its reader will handle the exit", self.name, w.budget.replica)

    # -- worker processes ----------------------------------------------------------------

    def _spawn(self, budget: WorkerBudget) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        env = {**thread_env(budget.threads), **gpu_env(budget.gpus)}
        boot = child.WorkerBoot(
            stage=self.name, replica=budget.replica, threads=budget.threads, cores=budget.cores,
            stage_bytes=self._stage_bytes, env=env, gpus=budget.gpus, log_level=self._log_level,
            max_memory=self._max_memory, max_items=self.stage.max_items_per_worker,
        )  # fmt: skip
        proc = self._ctx.Process(
            target=child.main, args=(child_conn, boot), name=f"parapipe:{self.name}#{budget.replica}"
        )
        w = _Worker(budget, proc, parent_conn)
        w.thread = threading.Thread(
            target=self._read, args=(w,), name=f"parapipe-reader-{self.name}#{budget.replica}", daemon=True
        )
        with self._spawn_lock:
            if self._closing:  # a replacement racing with close(): close() would not see it
                parent_conn.close()
                child_conn.close()
                return
            with environment(env):
                proc.start()
            child_conn.close()
            with self._lock:
                self._workers.append(w)
        w.thread.start()

    def _read(self, w: _Worker) -> None:
        """The one blocking waiter of this worker's connection."""
        while True:
            try:
                data = w.conn.recv_bytes()
            except (EOFError, OSError):
                break
            msg = transport.decode(data)
            transport.release(transport.segment_names(data))  # our mappings outlive the names
            kind = msg[0]
            if kind == P.RESULTS:
                self._on_results(w, msg[1], msg[2])
            elif kind == P.LOG:
                _emit_log(msg[1])
            elif kind == P.READY:
                self._on_ready(w, msg[1])
            elif kind == P.FAILED:
                w.startup_error = msg[1]
        self._on_exit(w)

    def _on_ready(self, w: _Worker, info: dict[str, Any]) -> None:
        with self._lock:
            w.info = info
            w.state = "ready"
            self._startup_failures = 0
        w.ready.set()
        self.pump()

    def _on_results(self, w: _Worker, rows: list[P.Result], unmapped: list[str]) -> None:
        now = time.monotonic()
        finished: list[tuple[Task, bool, Any]] = []
        with self._lock:
            w.msgs -= 1
            if w.sent:
                done_ids = w.sent.popleft()
                w.lent.update(w.segments.pop(done_ids[0], ()) if done_ids else ())
            free = [name for name in unmapped if name in w.lent]
            w.lent.difference_update(free)
            w.exclusive = False
            if self._deadlines is not None:
                self._deadlines.disarm(w)
            for tid, ok, value, t0, t1, cpu in rows:
                task = w.inflight.pop(tid, None)
                if type(value) is transport.Packed:
                    value.adopt()  # its segments now live as long as some task may send it
                if task is not None:
                    n = len(value) if ok and isinstance(value, P.ChunkResult) else 1
                    self.stats.account(task.enqueued, ok, t0, t1, cpu, now, n)
                    self._service_ewma = self.stats.service_ewma
                    finished.append((task, ok, value))
        self._arena.recycle(free)
        retry = [t for t, ok, v in finished if not ok and v.retryable and t.attempts < self.retries]
        for task in retry:
            task.attempts += 1
            task.announce_retry()
        if retry:
            with self._lock:
                self._pending.extendleft(reversed(retry))
        retrying = {id(t) for t in retry}
        self.pump()  # refill the worker before waking anyone: it works while we deliver
        with deferred_pumps():
            for task, ok, value in finished:
                if ok:
                    self._resolve(task, True, value)
                elif id(task) not in retrying:
                    error = StageError.from_exc_info(self.name, value)
                    self._resolve(task, False, error)

    def _on_deadline(self, w: _Worker | str) -> None:
        """A batch's wait ran out (pump it), or an item ran past the stage timeout: kill its
        worker; the exit handler fails the item."""
        if isinstance(w, str):
            self.pump()
            return
        with self._lock:
            if w.state != "ready" or not w.inflight:
                return
            for task in w.inflight.values():
                task.timed_out = True
        log.warning("stage %r replica %d ran past its timeout of %s s; killing it", self.name, w.budget.replica,
                    self.stage.timeout)  # fmt: skip
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.proc.pid, signal.SIGKILL)

    def _on_exit(self, w: _Worker) -> None:
        w.proc.join(timeout=STOP_GRACE)
        exitcode = w.proc.exitcode
        transport.sweep_spares(w.proc.pid)  # a worker killed while it held a spare segment
        with self._lock:
            was_ready = w.state == "ready"
            w.state = "dead"
            if w in self._workers:
                self._workers.remove(w)
            running = set(w.sent[0]) if w.sent else set()
            blamed = [t for tid, t in w.inflight.items() if tid in running]
            waiting = [t for tid, t in w.inflight.items() if tid not in running]
            w.inflight.clear()
            w.sent.clear()
            for names in w.segments.values():
                transport.release(names)
            w.segments.clear()
            transport.release(w.lent)
            w.lent.clear()
            closing = self._closing
        if self._deadlines is not None:
            self._deadlines.disarm(w)
        w.ready.set()
        w.conn.close()
        if closing:
            return
        if not was_ready:
            self._on_startup_failure(w, exitcode)
            return
        if exitcode != P.RECYCLE_EXIT:
            log.warning("stage %r replica %d: %s; replacing it", self.name, w.budget.replica, describe_exit(exitcode))
        with self._lock:
            self.stats.restarts += 1
        self._spawn(w.budget)
        self._requeue_orphans(blamed, waiting, exitcode)

    def _requeue_orphans(self, blamed: list[Task], waiting: list[Task], exitcode: int | None) -> None:
        """Tasks that were running when the worker died take the blame (an attempt, or a final
        error); tasks still waiting in its pipe, or held by a worker that retired, go back as-is."""
        if exitcode == P.RECYCLE_EXIT:
            waiting, blamed = blamed + waiting, []
        retry: list[Task] = list(waiting)
        for task in blamed:
            task.attempts += 1
            error = self._death_error(task, exitcode)
            if task.attempts <= self.retries and self._retryable(error):
                task.announce_retry()
                retry.append(task)
            else:
                self._resolve(task, False, error)
        with self._lock:
            self._pending.extendleft(reversed(retry))
        self.pump()

    def _death_error(self, task: Task, exitcode: int | None) -> ItemError:
        if task.timed_out:
            task.timed_out = False
            return TaskTimeout(self.name, timeout=self.stage.timeout, attempts=task.attempts)
        if exitcode == P.MEMORY_EXIT:
            limit = self._max_memory or 0
            msg = f"worker passed max_memory ({limit / 2**30:.2f} GiB) while processing this item"
            return WorkerDied(self.name, msg, exitcode=exitcode, attempts=task.attempts)
        return WorkerDied(self.name, exitcode=exitcode, attempts=task.attempts)

    def _retryable(self, error: ItemError) -> bool:
        if isinstance(error, TaskTimeout):
            return any(issubclass(TaskTimeout, t) for t in self.stage.retry_on)
        return not (isinstance(error, WorkerDied) and error.exitcode == P.MEMORY_EXIT)

    def _on_startup_failure(self, w: _Worker, exitcode: int | None) -> None:
        """A replacement whose setup() failed: try again with backoff, then fail the stage."""
        if not self._started:
            return  # wait_ready() reports it to the engine's start()
        message = self._startup_message(w, exitcode)
        with self._lock:
            self._startup_failures += 1
            failures = self._startup_failures
        if failures < _MAX_STARTUP_FAILURES:
            delay = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** (failures - 1))
            log.error("%s; retrying in %.1f s", message, delay)
            self._spawn_later(w.budget, delay)
            return
        self._fail_stage(f"{failures} replacement workers in a row failed to start; last: {message}")

    def _spawn_later(self, budget: WorkerBudget, delay: float) -> None:
        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
                if self._closing:
                    return
            self._spawn(budget)

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def _fail_stage(self, message: str) -> None:
        with self._lock:
            if any(x.state in ("ready", "starting") for x in self._workers):
                return
            self._failed = message
            orphans = self._take_all_queued()
        log.error("stage %r failed: %s", self.name, message)
        for task in orphans:
            self._resolve(task, False, StageFailed(self.name, message))

    def _startup_message(self, w: _Worker, exitcode: int | None = None) -> str:
        err = w.startup_error
        where = f"stage {self.name!r} replica {w.budget.replica}"
        if err is not None:
            return f"{where}: setup failed with {err.type}: {err.message}\n{err.traceback}"
        return f"{where}: {describe_exit(w.proc.exitcode if exitcode is None else exitcode)} during startup"

    def _resolve(self, task: Task, ok: bool, value: Any) -> None:
        if isinstance(value, ItemError):
            value.index = task.index if value.index is None else value.index
            value.key = task.key if value.key is None else value.key
        try:
            task.callback(ok, value)
        except Exception:  # a broken callback must not kill the reader thread
            log.exception("callback for an item of stage %r raised", self.name)

    # -- introspection -------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"stage": self.name, "replica": w.budget.replica, "pid": w.proc.pid, "state": w.state,
                 "cores": w.info.get("cores", w.budget.cores), "threads": w.budget.threads,
                 "gpus": w.budget.gpus, "pools": w.info.get("pools", [])}
                for w in sorted(self._workers, key=lambda w: w.budget.replica)
            ]  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            inflight = sum(len(w.inflight) for w in self._workers)
            queued = len(self._pending) + (len(self._batcher) if self._batcher is not None else 0)
            snap = self.stats.snapshot(queued, inflight)
            snap["shm_bytes_sent"] = self._arena.bytes_written
            if self.batch_stats is not None:
                snap["batches"] = self.batch_stats.as_dict()
            return snap

    def cost_per_item(self) -> float | None:
        """Smoothed seconds one item takes inside a worker (None before the first result):
        what ``map`` reads to size its chunks."""
        return self._service_ewma


def _pickle_stage(stage: Stage) -> bytes:
    try:
        return pickle.dumps(stage, P.PROTOCOL)
    except ConfigError:
        raise
    except Exception as exc:  # any pickling failure means the same fix
        raise ConfigError(
            f"stage {stage.stage_name!r} cannot be sent to its worker processes: {exc}. "
            "Keep __init__ arguments picklable and load models in setup(), not __init__"
        ) from exc


def _emit_log(data: dict[str, Any]) -> None:
    record = logging.makeLogRecord(data)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


# -- deferred pumping ----------------------------------------------------------------------
# A reader thread that resolves a chunk of results may submit each result to the next stage.
# Pumping once after the chunk (rather than per result) lets that stage receive a chunk too.

_local = threading.local()


@contextlib.contextmanager
def deferred_pumps() -> Iterator[None]:
    if getattr(_local, "pools", None) is not None:
        yield
        return
    _local.pools = pools = {}
    try:
        yield
    finally:
        _local.pools = None
        for pool in pools.values():
            pool.pump()


def _pump_soon(pool: StagePool) -> None:
    pools = getattr(_local, "pools", None)
    if pools is None:
        pool.pump()
    else:
        pools[id(pool)] = pool
