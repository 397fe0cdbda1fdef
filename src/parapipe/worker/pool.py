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
import itertools
import logging
import math
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any, Protocol

from ..errors import (
    ConfigError,
    ItemError,
    StageError,
    StageFailed,
    WorkerDied,
    WorkerStartupError,
    describe_exit,
)
from ..resources import WorkerBudget, gpu_env, thread_env
from ..stage import Stage
from . import child
from . import protocol as P

log = logging.getLogger("parapipe")

_MAX_MSGS = 2
"""Messages in flight per worker: one being processed, one waiting in the pipe."""
_MAX_CHUNK = 256
_TARGET_MSG_SECONDS = 0.002
"""Chunk cheap tasks until a message carries about this much work."""
_STOP_GRACE = 5.0


class Job(Protocol):
    finished: bool


Callback = Callable[[bool, Any], None]


class Task:
    """One item on its way through one stage."""

    __slots__ = ("attempts", "callback", "enqueued", "index", "item", "job", "key")

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

    @property
    def abandoned(self) -> bool:
        return self.job is not None and self.job.finished


@dataclass
class StageStats:
    """Counters for one stage, updated under the pool's lock."""

    done: int = 0
    failed: int = 0
    busy_s: float = 0.0
    cpu_s: float = 0.0
    queue_wait_s: float = 0.0
    restarts: int = 0
    first: float | None = None
    last: float | None = None
    latencies: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=10_000))
    cpu_per_item: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=1_000))

    def snapshot(self, queued: int, inflight: int) -> dict[str, Any]:
        lat = sorted(self.latencies)
        span = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        return {
            "done": self.done,
            "failed": self.failed,
            "queued": queued,
            "in_flight": inflight,
            "busy_s": round(self.busy_s, 6),
            "cpu_s": round(self.cpu_s, 6),
            "queue_wait_s": round(self.queue_wait_s, 6),
            "items_per_s": round(self.done / span, 3) if span > 0 else None,
            "latency_p50_s": _quantile(lat, 0.50),
            "latency_p99_s": _quantile(lat, 0.99),
            "restarts": self.restarts,
        }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 6)


class _Worker:
    __slots__ = (
        "budget",
        "conn",
        "exclusive",
        "inflight",
        "info",
        "msgs",
        "proc",
        "ready",
        "send_lock",
        "startup_error",
        "state",
        "thread",
    )

    def __init__(self, budget: WorkerBudget, proc: Any, conn: Any) -> None:
        self.budget = budget
        self.proc = proc
        self.conn = conn
        self.inflight: dict[int, Task] = {}
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
        retries: int = 2,
        log_level: int | None = None,
    ) -> None:
        self.stage = stage
        self.name = stage.stage_name
        self.budgets = budgets
        self.retries = retries
        self.stats = StageStats()
        self._ctx = mp_context
        self._log_level = log_level if log_level is not None else logging.getLogger().getEffectiveLevel()
        self._stage_bytes = _pickle_stage(stage)
        self._lock = threading.Lock()
        self._pending: collections.deque[Task] = collections.deque()
        self._workers: list[_Worker] = []
        self._ids = itertools.count()
        self._closing = False
        self._failed: str | None = None
        self._service_ewma: float | None = None

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

    def close(self, *, timeout: float = _STOP_GRACE) -> None:
        """Stop every worker: STOP message, then join, terminate and kill in that order."""
        with self._lock:
            self._closing = True
            orphans = list(self._pending)
            self._pending.clear()
            workers = list(self._workers)
        for t in orphans:
            self._resolve(
                t, False, WorkerDied(self.name, "engine closed before the item ran", index=t.index, key=t.key)
            )
        for w in workers:
            self._send_raw(w, P.dumps((P.STOP,)))
        deadline = time.monotonic() + timeout
        for w in workers:
            _stop_process(w.proc, deadline)
        for w in workers:
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join(timeout=_STOP_GRACE)

    # -- submission ----------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        task.enqueued = time.monotonic()
        with self._lock:
            if self._failed is not None:
                failure = self._failed
            else:
                failure = None
                self._pending.append(task)
        if failure is not None:
            self._resolve(task, False, StageFailed(self.name, failure))
            return
        _pump_soon(self)

    def pump(self) -> None:
        with self._lock:
            assignments = self._assign()
        for w, tasks in assignments:
            self._send_tasks(w, tasks)

    def _assign(self) -> list[tuple[_Worker, list[Task]]]:
        out: list[tuple[_Worker, list[Task]]] = []
        while self._pending:
            free = [w for w in self._workers if w.state == "ready" and w.msgs < _MAX_MSGS and not w.exclusive]
            if not free:
                break
            w = min(free, key=lambda w: len(w.inflight))
            chunk = self._take_chunk(w, len(free))
            if chunk:
                w.msgs += 1
                out.append((w, chunk))
        return out

    def _take_chunk(self, w: _Worker, nfree: int) -> list[Task]:
        """Retried tasks go alone to an otherwise idle worker so a crash blames only them."""
        limit = self._chunk_limit(nfree)
        chunk: list[Task] = []
        while self._pending and len(chunk) < limit:
            task = self._pending[0]
            if task.abandoned:
                self._pending.popleft()
                continue
            if task.attempts > 0:
                if chunk or w.msgs:
                    break
                w.exclusive = True
            self._pending.popleft()
            tid = next(self._ids)
            w.inflight[tid] = task
            chunk.append(task)
            if w.exclusive:
                break
        return chunk

    def _chunk_limit(self, nfree: int) -> int:
        if self._service_ewma is None or self._service_ewma <= 0:
            return 1
        by_cost = int(_TARGET_MSG_SECONDS / self._service_ewma)
        by_balance = math.ceil(len(self._pending) / (2 * nfree))
        return max(1, min(_MAX_CHUNK, by_cost, by_balance))

    def _send_tasks(self, w: _Worker, tasks: list[Task]) -> None:
        ids = {id(t): tid for tid, t in w.inflight.items()}
        rows = [(ids[id(t)], t.item) for t in tasks if id(t) in ids]
        try:
            data = P.dumps((P.TASKS, rows))
        except Exception:
            data = self._drop_unpicklable(w, rows)
        self._send_raw(w, data)

    def _drop_unpicklable(self, w: _Worker, rows: list[tuple[int, Any]]) -> bytes:
        keep = []
        for tid, item in rows:
            try:
                pickle.dumps(item, P.PROTOCOL)
                keep.append((tid, item))
            except Exception as exc:
                with self._lock:
                    task = w.inflight.pop(tid, None)
                if task is not None:
                    err = StageError(
                        self.name,
                        f"item cannot be sent to a worker: {exc}",
                        exc_type="ItemNotPicklable",
                        index=task.index,
                        key=task.key,
                    )
                    self._resolve(task, False, err)
        return P.dumps((P.TASKS, keep))

    def _send_raw(self, w: _Worker, data: bytes) -> None:
        with w.send_lock:
            try:
                w.conn.send_bytes(data)
            except (OSError, ValueError):
                log.debug("send to %s#%d failed; its reader will handle the exit", self.name, w.budget.replica)

    # -- worker processes ----------------------------------------------------------------

    def _spawn(self, budget: WorkerBudget) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        env = {**thread_env(budget.threads), **gpu_env(budget.gpus)}
        boot = child.WorkerBoot(
            stage=self.name,
            replica=budget.replica,
            threads=budget.threads,
            cores=budget.cores,
            stage_bytes=self._stage_bytes,
            env=env,
            gpus=budget.gpus,
            log_level=self._log_level,
        )
        proc = self._ctx.Process(
            target=child.main, args=(child_conn, boot), name=f"parapipe:{self.name}#{budget.replica}"
        )
        with _environment(env):
            proc.start()
        child_conn.close()
        w = _Worker(budget, proc, parent_conn)
        w.thread = threading.Thread(
            target=self._read, args=(w,), name=f"parapipe-reader-{self.name}#{budget.replica}", daemon=True
        )
        with self._lock:
            self._workers.append(w)
        w.thread.start()
        return w

    def _read(self, w: _Worker) -> None:
        """The one blocking waiter of this worker's connection."""
        while True:
            try:
                msg = P.loads(w.conn.recv_bytes())
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == P.RESULTS:
                self._on_results(w, msg[1])
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
        w.ready.set()
        self.pump()

    def _on_results(self, w: _Worker, rows: list[P.Result]) -> None:
        now = time.monotonic()
        finished: list[tuple[Task, bool, Any]] = []
        with self._lock:
            w.msgs -= 1
            w.exclusive = False
            for tid, ok, value, t0, t1, cpu in rows:
                task = w.inflight.pop(tid, None)
                if task is not None:
                    n = len(value) if ok and isinstance(value, P.ChunkResult) else 1
                    self._account(task, ok, t0, t1, cpu, now, n)
                    finished.append((task, ok, value))
        with deferred_pumps():
            for task, ok, value in finished:
                if ok:
                    self._resolve(task, True, value)
                else:
                    self._resolve(
                        task,
                        False,
                        StageError(
                            self.name,
                            value.message,
                            exc_type=value.type,
                            traceback=value.traceback,
                            index=task.index,
                            key=task.key,
                        ),
                    )
            _pump_soon(self)

    def _account(self, task: Task, ok: bool, t0: float, t1: float, cpu: float, now: float, n: int) -> None:
        """Per-item figures divide a chunk's time by its size, so chunking does not hide cost."""
        s = self.stats
        s.done += n if ok else 0
        s.failed += not ok
        s.busy_s += t1 - t0
        s.cpu_s += cpu
        s.cpu_per_item.append(cpu / n)
        service = (t1 - t0) / n
        s.queue_wait_s += max(0.0, t0 - task.enqueued)
        s.latencies.append(now - task.enqueued)
        s.first = task.enqueued if s.first is None else min(s.first, task.enqueued)
        s.last = now
        ewma = self._service_ewma
        self._service_ewma = service if ewma is None else 0.9 * ewma + 0.1 * service

    def _on_exit(self, w: _Worker) -> None:
        w.proc.join(timeout=_STOP_GRACE)
        exitcode = w.proc.exitcode
        with self._lock:
            was_ready = w.state == "ready"
            w.state = "dead"
            if w in self._workers:
                self._workers.remove(w)
            orphans = list(w.inflight.values())
            w.inflight.clear()
            closing = self._closing
        w.ready.set()
        w.conn.close()
        if closing:
            return
        if not was_ready:
            self._on_startup_failure(w, exitcode)
            return
        log.warning(
            "stage %r replica %d died (%s); restarting it",
            self.name,
            w.budget.replica,
            describe_exit(exitcode),
        )
        with self._lock:
            self.stats.restarts += 1
        self._spawn(w.budget)
        self._retry_or_fail(orphans, exitcode)

    def _retry_or_fail(self, orphans: list[Task], exitcode: int | None) -> None:
        retry: list[Task] = []
        for task in orphans:
            task.attempts += 1
            if task.attempts <= self.retries:
                retry.append(task)
            else:
                self._resolve(
                    task,
                    False,
                    WorkerDied(
                        self.name,
                        exitcode=exitcode,
                        attempts=task.attempts,
                        index=task.index,
                        key=task.key,
                    ),
                )
        with self._lock:
            self._pending.extendleft(reversed(retry))
        self.pump()

    def _on_startup_failure(self, w: _Worker, exitcode: int | None) -> None:
        """A worker that never got ready: fail the stage if no worker of it is left."""
        message = self._startup_message(w, exitcode)
        with self._lock:
            if any(x.state in ("ready", "starting") for x in self._workers):
                return
            self._failed = message
            orphans = list(self._pending)
            self._pending.clear()
        log.error("%s", message)
        for task in orphans:
            self._resolve(task, False, StageFailed(self.name, message))

    def _startup_message(self, w: _Worker, exitcode: int | None = None) -> str:
        err = w.startup_error
        if err is not None:
            return (
                f"stage {self.name!r} replica {w.budget.replica}: setup failed with {err.type}: "
                f"{err.message}\n{err.traceback}"
            )
        exitcode = w.proc.exitcode if exitcode is None else exitcode
        why = describe_exit(exitcode)
        return f"stage {self.name!r} replica {w.budget.replica}: {why} during startup"

    def _resolve(self, task: Task, ok: bool, value: Any) -> None:
        if isinstance(value, ItemError) and value.index is None:
            value.index = task.index
        try:
            task.callback(ok, value)
        except Exception:  # a broken callback must not kill the reader thread
            log.exception("callback for an item of stage %r raised", self.name)

    # -- introspection -------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "stage": self.name,
                    "replica": w.budget.replica,
                    "pid": w.proc.pid,
                    "state": w.state,
                    "cores": w.info.get("cores", w.budget.cores),
                    "threads": w.budget.threads,
                    "gpus": w.budget.gpus,
                    "pools": w.info.get("pools", []),
                }
                for w in sorted(self._workers, key=lambda w: w.budget.replica)
            ]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            inflight = sum(len(w.inflight) for w in self._workers)
            return self.stats.snapshot(len(self._pending), inflight)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._workers if w.proc.pid is not None]


def _pickle_stage(stage: Stage) -> bytes:
    try:
        return pickle.dumps(stage, P.PROTOCOL)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"stage {stage.stage_name!r} cannot be sent to its worker processes: {exc}. "
            "Keep __init__ arguments picklable and load models in setup(), not __init__"
        ) from exc


_env_lock = threading.Lock()


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """Set variables only while a child is exec'd: it inherits them before any import runs."""
    with _env_lock:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _stop_process(proc: Any, deadline: float) -> None:
    proc.join(max(0.0, deadline - time.monotonic()))
    if proc.exitcode is None:
        proc.terminate()
        proc.join(1.0)
    if proc.exitcode is None:
        proc.kill()
        proc.join(1.0)


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
    outer = getattr(_local, "pools", None)
    if outer is not None:
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
