"""Routes one item through a graph of stage pools by continuation: no thread per item.

Each graph node becomes a small object with ``run(value, job, done)``. Between stages a large
value stays a `transport.Packed` (the next stage's worker maps its segments); it is decoded here
only for a merge and for the job's final result. A stage node submits to
its pool and continues in the pool's reader thread when the result arrives; a sequence chains
its children; a parallel node starts every branch at once and merges when the last one lands.
The first failure of any branch finishes the job; work of its siblings still queued is dropped
(their tasks see ``job.finished``) rather than run for nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any

from .errors import ItemError, ResultLost, StageError, TransportError
from .graph import Node, Parallel, Pipeline
from .stage import Stage
from .transport import unpacked
from .worker.pool import StagePool, Task
from .worker.protocol import ChunkResult, ExcInfo

Done = Callable[[bool, Any], None]


_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))


class Job(Future[Any]):
    """One submitted item: the future its caller holds, its identity, and whether it already
    has an outcome.

    The job *is* the future, so a submission costs one object, not a future, a job and a
    done-callback closure referring to each other. Nothing on the item's path points back at
    a job once it ended (tasks are dropped when answered, ``on_end`` is the engine's), so a
    finished job and its result are freed by reference counting alone, not left for the cycle
    collector: a ``map`` over millions of items keeps only its window alive.

    Its ``_condition`` is built on first use, around a plain lock: a `Future` builds a
    `threading.Condition` (Python code, and an RLock) per instance, and takes it at every
    step, ~2 µs a submission that only a caller who blocks needs. The outcome, ``done()``,
    an early ``result()`` and ``add_done_callback`` use the lock alone; blocking, and
    `concurrent.futures.wait`/`as_completed` (which take ``_condition`` and append to
    ``_waiters``), build the condition, and the outcome notifies it when it exists. The
    lock is not reentrant: nothing here calls back into the future while holding it.
    """

    def __init__(
        self,
        index: int | None,
        key: str | None = None,
        on_retry: Callable[[], None] | None = None,
        on_end: Callable[[Job], None] | None = None,
    ) -> None:
        # Not Future.__init__: it builds the condition this class builds only when needed.
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._gates: list[Any] = []
        """Locks held by callers sleeping in ``result()``; the outcome releases them."""
        self._done_callbacks: list[Callable[[Future[Any]], object]] = []
        self.index = index
        self.key = key
        self.finished = False
        self.on_retry = on_retry
        """Called before each retry of this item in any stage (the journal counts attempts)."""
        self._on_end = on_end

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]  # built on first use
        cond = self._cond
        if cond is None:
            with _BUILD:  # two first waiters must share one condition, or one is never woken
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition(self._lock)
        return cond

    def finish(self, ok: bool, value: Any) -> None:
        if self.finished:
            return
        self.finished = True
        if ok:
            try:
                value = unpacked(value)
            except TransportError as exc:  # its segment is gone: this item's error, not a hang
                ok, value = False, ResultLost(message=str(exc), index=self.index, key=self.key)
                value.__cause__ = exc
        if self._settle(value, None) if ok else self._settle(None, value):
            self._ended()
        # else cancelled meanwhile: the canceller ended the job

    def set_result(self, result: Any) -> None:
        if not self._settle(result, None):
            raise InvalidStateError(f"{self._state}: {self!r}")

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._settle(None, exception):
            raise InvalidStateError(f"{self._state}: {self!r}")

    def _settle(self, result: Any, exception: BaseException | None) -> bool:
        """Set the outcome (False: it already had one); one lock round, no running state."""
        with self._lock:
            if self._state in _DONE:
                return False
            self._result = result
            self._exception = exception
            self._state = FINISHED
            for waiter in self._waiters:
                if exception is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            if self._cond is not None:
                self._cond.notify_all()
            self._open_gates()
        if self._done_callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]  # Future's, untyped in typeshed
        return True

    def done(self) -> bool:
        return self._state in _DONE

    def cancelled(self) -> bool:
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def _open_gates(self) -> None:
        """Under the lock: wake every caller sleeping in ``result()``."""
        for gate in self._gates:
            gate.release()
        self._gates.clear()

    def result(self, timeout: float | None = None) -> Any:
        if self._state != FINISHED:
            self._sleep(timeout)
        state = self._state
        if state == FINISHED:
            if self._exception is None:
                return self._result
            try:
                raise self._exception
            finally:
                self = None  # type: ignore[assignment]  # as Future does: no frame -> exception -> frame cycle
        if state in (CANCELLED, CANCELLED_AND_NOTIFIED):
            raise CancelledError()
        raise FutureTimeout()

    def _sleep(self, timeout: float | None) -> None:
        """Block until the job has an outcome, at most ``timeout`` seconds."""
        with self._lock:
            if self._state in _DONE:
                return
            gate = _new_lock()
            gate.acquire()
            self._gates.append(gate)
        if timeout is None:
            gate.acquire()
        elif not gate.acquire(timeout=max(0.0, timeout)):
            with self._lock:
                if gate in self._gates:
                    self._gates.remove(gate)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == FINISHED:
            return self._exception
        return super().exception(timeout)

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        with self._lock:
            if self._state not in _DONE:
                self._done_callbacks.append(fn)
                return
        super().add_done_callback(fn)  # done: Future's calls it now, and logs what it raises

    def cancel(self) -> bool:
        """Cancel the item: its tasks still queued in any stage are dropped, not run."""
        if not super().cancel():
            return False
        with self._lock:
            self._open_gates()
        if not self.finished:
            self.finished = True
            self.set_running_or_notify_cancel()  # so concurrent.futures.wait() sees it done
            self._ended()
        return True

    def _ended(self) -> None:
        if self._on_end is not None:
            self._on_end(self)


_new_lock = threading.Lock
_BUILD = threading.Lock()
"""Guards the first build of any job's condition (rare: only a caller that blocks builds one)."""


class _StageNode:
    __slots__ = ("pool",)

    def __init__(self, pool: StagePool) -> None:
        self.pool = pool

    def run(self, value: Any, job: Job, done: Done) -> None:
        self.pool.submit(Task(value, done, job=job, index=job.index, key=job.key))


class _SeqNode:
    __slots__ = ("children",)

    def __init__(self, children: list[Any]) -> None:
        self.children = children

    def run(self, value: Any, job: Job, done: Done) -> None:
        self._step(0, value, job, done)

    def _step(self, i: int, value: Any, job: Job, done: Done) -> None:
        if i == len(self.children):
            done(True, value)
            return

        def next_step(ok: bool, result: Any) -> None:
            if ok and not job.finished:
                self._step(i + 1, result, job, done)
            else:
                done(ok, result)

        self.children[i].run(value, job, next_step)


class _ParNode:
    __slots__ = ("branches", "merge", "stage")

    def __init__(self, branches: dict[str, Any], merge: Callable[[dict[str, Any]], Any]) -> None:
        self.branches = branches
        self.merge = merge
        self.stage = f"merge:{getattr(merge, '__name__', 'merge')}"

    def run(self, value: Any, job: Job, done: Done) -> None:
        gather = _Gather(list(self.branches), self._merge_into(done, job))
        for name, node in self.branches.items():
            node.run(value, job, gather.collector(name))

    def _merge_into(self, done: Done, job: Job) -> Done:
        def finish(ok: bool, results: Any) -> None:
            if not ok:
                done(False, results)
            elif any(isinstance(r, ChunkResult) for r in results.values()):
                done(True, self._merge_chunk(results))
            else:
                try:
                    merged = self.merge({name: unpacked(r) for name, r in results.items()})
                except Exception as exc:  # a merge error is this item's error
                    info = ExcInfo.capture(exc)
                    error = StageError.from_exc_info(self.stage, info, index=job.index)
                    done(False, error)
                    return
                done(True, merged)

        return finish

    def _merge_chunk(self, results: dict[str, ChunkResult]) -> ChunkResult:
        """Merge a chunk element by element; an element fails if any branch failed it."""
        errors: dict[int, ItemError] = {}
        for branch in results.values():
            for i, err in branch.errors.items():
                errors.setdefault(i, err)
        names = list(results)
        values: list[Any] = []
        for i, row in enumerate(zip(*(r.values for r in results.values()), strict=True)):
            if i in errors:
                values.append(None)
                continue
            try:
                values.append(self.merge(dict(zip(names, row, strict=True))))
            except Exception as exc:  # a merge error is this element's error
                values.append(None)
                errors[i] = StageError.from_exc_info(self.stage, ExcInfo.capture(exc))
        return ChunkResult(values, errors)


class _Gather:
    """Collects branch results; reports once, on the first failure or when all succeeded."""

    __slots__ = ("lock", "names", "remaining", "report", "reported", "results")

    def __init__(self, names: list[str], report: Done) -> None:
        self.lock = threading.Lock()
        self.report = report
        self.names = names
        self.remaining = len(names)
        self.results: dict[str, Any] = {}
        self.reported = False

    def collector(self, name: str) -> Done:
        def collect(ok: bool, value: Any) -> None:
            with self.lock:
                if self.reported:
                    return
                if ok:
                    self.results[name] = value
                    self.remaining -= 1
                    last = self.remaining == 0
                else:
                    last = True
                self.reported = last
            if last:
                self.report(ok, self._ordered() if ok else value)

        return collect

    def _ordered(self) -> dict[str, Any]:
        return {name: self.results[name] for name in self.names}


def compile_graph(node: Node, pools: dict[str, StagePool]) -> Any:
    """Turn a graph into runnable nodes bound to the stage pools."""
    if isinstance(node, Stage):
        return _StageNode(pools[node.stage_name])
    if isinstance(node, Pipeline):
        return _SeqNode([compile_graph(s, pools) for s in node.steps])
    if isinstance(node, Parallel):
        return _ParNode({k: compile_graph(b, pools) for k, b in node.branches.items()}, node.merge)
    raise TypeError(f"not a graph node: {node!r}")
