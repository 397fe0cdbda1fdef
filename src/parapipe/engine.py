"""The Engine: the one place that wires resources, worker pools and the scheduler together.

Start it with ``with Engine(graph) as engine:``; leaving the block drains in-flight work (or
cancels it if the block raised), stops every worker and joins every thread it started.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import multiprocessing
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Literal

from . import autotune, transport
from .config import DEFAULT_RETRIES, DEFAULT_STARTUP_TIMEOUT
from .errors import ConfigError, EngineClosed
from .gpus import as_devices
from .graph import Node, as_graph, map_stages, stages
from .itemkeys import ItemKeys
from .journal import JobStore
from .journaled import journaled_map
from .mapper import MapWindow, ResultSizes, Submit, chunk_size, window_size
from .plantree import format_plan
from .pools import PoolSet
from .progress import NO_BAR, progress_bar
from .recovery import Keys
from .resources import usable_cores
from .scheduler import Job, compile_graph

if TYPE_CHECKING:
    from .ray.cluster import RayConnection

__all__ = ["Engine"]

log = logging.getLogger("parapipe")

StartMethod = Literal["spawn", "forkserver", "fork"]
Mode = Literal["throughput", "latency"]
Backend = Literal["local", "ray"]

_open_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


class Engine:
    """Runs a graph of stages in long-lived worker processes.

    Args:
        graph: a `Stage`, a function, a `Pipeline` or a `Parallel`.
        start_method: ``"spawn"`` (default; safe with CUDA), ``"forkserver"`` or ``"fork"``.
        cpus: ``None`` uses each stage's own ``cpus``; ``"auto"`` measures every stage on the
            ``warmup`` items and chooses threads, replicas and CPU priority (`parapipe.priority`)
            per stage, in place of the stages' own ``cpus`` and ``nice``.
        mode: what ``"auto"`` optimises: ``"throughput"`` (items/s) or ``"latency"`` (one item).
        warmup: items run through the graph at start to measure stages (for ``cpus="auto"``).
        cores: the cores to plan on; default: those this process may use (affinity, cgroups).
        gpu_devices: the GPUs to place ``gpus=0.5`` / ``gpu_memory=`` stages on: ids, or
            ``{id: "80GiB"}``; default: discovered (NVML, ``CUDA_VISIBLE_DEVICES``, torch). See docs/gpu.md.
        startup_timeout: seconds each worker has to finish ``setup()``.
        retries: attempts after a worker death before an item fails with `WorkerDied`.
        backend: ``"local"`` (worker processes on this machine) or ``"ray"`` (one Ray actor per
            replica, see docs/ray.md); default ``$PARAPIPE_BACKEND``, else ``"local"``.
        ray_address: for ``"ray"``: None joins the Ray of this process or starts a local one,
            ``"auto"`` a running cluster, ``"ray://host:10001"`` Ray Client; default
            ``$PARAPIPE_RAY_ADDRESS``.
    """

    def __init__(
        self,
        graph: Node | Any,
        *,
        start_method: StartMethod = "spawn",
        cpus: Literal["auto"] | None = None,
        mode: Mode = "throughput",
        warmup: Iterable[Any] | None = None,
        cores: Iterable[int] | None = None,
        gpu_devices: Sequence[int] | Mapping[int, int | str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backend: Backend | None = None,
        ray_address: str | None = None,
    ) -> None:
        if cpus not in (None, "auto"):
            raise ConfigError(f"Engine cpus must be None or 'auto', got {cpus!r}; set per-stage cpus on the stages")
        if mode not in ("throughput", "latency"):
            raise ConfigError(f"mode must be 'throughput' or 'latency', got {mode!r}")
        if start_method not in multiprocessing.get_all_start_methods():
            raise ConfigError(f"start_method {start_method!r} is not available here; use 'spawn'")
        self.graph = as_graph(graph)
        self._stages = stages(self.graph)
        if cpus == "auto":
            self._stages = [s.options(cpus="auto", nice=None) for s in self._stages]
            by_name = {s.stage_name: s for s in self._stages}
            self.graph = map_stages(self.graph, lambda s: by_name[s.stage_name])
        self.mode: Mode = mode
        self._warmup = list(warmup) if warmup is not None else None
        chosen = backend or os.environ.get("PARAPIPE_BACKEND") or "local"
        if chosen not in ("local", "ray"):
            raise ConfigError(f"backend must be 'local' or 'ray' (also in $PARAPIPE_BACKEND), got {chosen!r}")
        pool_set: type[PoolSet] = PoolSet
        self._ray: RayConnection | None = None
        if chosen == "ray":
            from . import ray as ray_backend

            pool_set, connect = ray_backend.load()
            self._ray = connect(ray_address or os.environ.get("PARAPIPE_RAY_ADDRESS") or None)
        self.backend: Backend = "ray" if chosen == "ray" else "local"
        default_cores = self._ray.cores if self._ray is not None else None
        self._cores = tuple(cores) if cores is not None else default_cores or usable_cores()
        self._pools = pool_set(
            self._stages,
            mp_context=multiprocessing.get_context(start_method),
            retries=retries,
            startup_timeout=startup_timeout,
            cores=self._cores,
            gpu_devices=None if gpu_devices is None else as_devices(gpu_devices),
        )
        self._root: Any = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active: set[Job] = set()
        self._seq = 0
        self._state = "new"
        self._result_sizes = ResultSizes()
        """What this graph's results measured in the last map: the next map's first units."""

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(cancel=exc_type is not None)

    def start(self) -> Engine:
        """Start every worker and wait until all have run ``setup()``."""
        if self._state != "new":
            raise EngineClosed("an Engine starts once; create a new one")
        self._state = "starting"
        _open_engines.add(self)
        transport.sweep_dead()  # shared memory left by an engine that was SIGKILLed
        try:
            self._pools.start()
            self._root = compile_graph(self.graph, dict(self._pools))
            if any(s.cpus == "auto" for s in self._stages):
                self._autotune()
        except BaseException:
            self._pools.close()
            self._release_backend()
            self._state = "closed"
            raise
        self._state = "running"
        return self

    def close(self, *, cancel: bool = False, timeout: float | None = None) -> None:
        """Stop the engine. Idempotent.

        Args:
            cancel: cancel items not finished yet instead of waiting for them.
            timeout: most seconds to wait for in-flight items; then they are cancelled.
        """
        with self._lock:
            if self._state in ("closed", "new"):
                self._state = "closed"
                self._release_backend()
                return
            self._state = "closing"
            if not cancel:
                self._idle.wait_for(lambda: not self._active, timeout)
            leftover = list(self._active)
        for job in leftover:
            job.cancel()
        self._pools.close()
        transport.sweep(os.getpid())
        self._release_backend()
        with self._lock:
            self._state = "closed"
        _open_engines.discard(self)

    def _release_backend(self) -> None:
        if self._ray is not None:
            self._ray.release()

    def _autotune(self) -> None:
        """Measure the stages on the warm-up items, re-plan, restart pools whose budget changed."""
        if not self._warmup:
            log.warning(
                "cpus='auto' without warmup items: keeping one single-thread replica per "
                "auto stage; pass Engine(..., warmup=[some items]) to measure and plan"
            )
            return
        for item in self._warmup:
            self._submit_job(item, None).result()
        costs = {name: autotune.median_cost(pool) for name, pool in self._pools.items()}
        budgets = autotune.plan(self._stages, self.graph, costs, self._cores, self.mode)
        log.info("cpus='auto' measured %s and planned:\n%s", costs, format_plan([(b, None) for b in budgets]))
        self._pools.apply_plan(budgets)
        self._root = compile_graph(self.graph, dict(self._pools))

    # -- submission ----------------------------------------------------------------------

    def submit(self, item: Any, *, key: str | None = None, on_retry: Callable[[], None] | None = None) -> Future[Any]:
        """Send one item through the graph; the future gets its result or an `ItemError`.

        ``on_retry`` is called (in a routing thread: keep it short) before each new attempt
        after a worker death or a timeout, so a journal can log attempts.
        """
        return self._submit_job(item, key, None, on_retry)

    async def asubmit(self, item: Any, *, key: str | None = None) -> Any:
        """``await`` one item's result from a running event loop (for servers)."""
        return await asyncio.wrap_future(self.submit(item, key=key))

    def run(self, item: Any, *, timeout: float | None = None) -> Any:
        """Process one item and block for its result."""
        return self.submit(item).result(timeout)

    def _submit_job(
        self, item: Any, key: str | None, index: int | None = None, on_retry: Callable[[], None] | None = None
    ) -> Future[Any]:
        job = Job(index, key, on_retry, self._job_ended)
        with self._lock:
            if self._state not in ("running", "starting"):
                raise EngineClosed(f"the engine is {self._state}; submit inside `with Engine(...)`")
            if index is None:
                job.index = self._seq
                self._seq += 1
            self._active.add(job)
        self._root.run(item, job, job.finish)
        return job

    def _job_ended(self, job: Job) -> None:
        """Without the lock (set operations are atomic): the lock is only for waking close(),
        which set ``closing`` before it looked at ``_active``, so it cannot miss this discard."""
        self._active.discard(job)
        if not self._active and self._state == "closing":
            with self._lock:
                self._idle.notify_all()

    def map(
        self,
        items: Iterable[Any],
        *,
        ordered: bool = True,
        progress: bool | str = False,
        return_exceptions: bool = False,
        max_inflight: int | None = None,
        journal: str | os.PathLike[str] | JobStore | None = None,
        key: Keys = None,
        namespace: str = "default",
        retry_failed: bool = False,
        run: str | None = None,
        with_keys: bool = False,
    ) -> Iterator[Any]:
        """Stream items through the graph with a bounded number in flight.

        Args:
            ordered: yield results in input order (else as they complete).
            progress: show a progress bar (``True`` or a description string).
            return_exceptions: yield an `ItemError` in place of a failed item's result.
            max_inflight: items in flight at once; default adapts to how cheap the stages are.
                Lower it when items are large.
            journal: a SQLite file (or a `JobStore`) recording every item's state, so that
                running the same call again after a crash skips done items and returns their
                stored results (and the stored errors of failed items).
            key: names each item in the journal: a function of the item, or a sequence of keys
                aligned with ``items``. Default: the item's position; pass e.g. file paths so that
                a changed order still resumes correctly. Works without a journal too: each
                `ItemError` then carries its item's key.
            namespace: journal namespace, so several different maps can share one file.
            retry_failed: run the journal's failed items again instead of answering their error.
            run: the old name of ``namespace``; deprecated.
            with_keys: yield ``(key, result)`` pairs, the key being the item's ``key=`` (a
                ``str``) or its position (an ``int``); with ``return_exceptions`` a failure is
                ``(key, ItemError)``. Use it with ``ordered=False`` to know which item each
                result belongs to.
        """
        if run is not None:
            warnings.warn("map(run=...) is deprecated; use map(namespace=...)", DeprecationWarning, stacklevel=2)
            namespace = run
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        if journal is None and not progress and key is None and not with_keys:
            # The fast path: units are lists, flattened at C speed (no generator hop per item).
            window = self._map_window(self._submit_indexed, ordered, return_exceptions, max_inflight, total)
            return itertools.chain.from_iterable(window.units(iter(items)))
        managed = (ordered, progress, return_exceptions, max_inflight, journal, key, namespace, retry_failed, with_keys)
        return self._map_managed(iter(items), total, *managed)

    def _map_managed(
        self,
        items: Iterator[Any],
        total: int | None,
        ordered: bool,
        progress: bool | str,
        return_exceptions: bool,
        max_inflight: int | None,
        journal: str | os.PathLike[str] | JobStore | None,
        key: Keys,
        namespace: str,
        retry_failed: bool,
        with_keys: bool,
    ) -> Iterator[Any]:
        """``map`` with a progress bar, a journal and/or named items, closed when the iteration
        ends (after the window, which cancels what is still in flight)."""
        with contextlib.ExitStack() as stack:
            submit: Submit = self._submit_indexed
            names = None
            # A journal names items by their keys itself (its errors carry them, and it can send
            # them in chunks); ItemKeys names them otherwise, or when pairs are asked for.
            if with_keys or (key is not None and journal is None):
                names = ItemKeys(key, pair=with_keys, return_exceptions=return_exceptions)
                items = names.feed(items)
                key = names.journal_keys() if journal is not None else None
            if journal is not None:
                journaled = journaled_map(
                    items, self._submit_job, journal, namespace=namespace, key=key, retry_failed=retry_failed
                )
                items, submit = stack.enter_context(journaled)
            if names is not None:
                submit = names.submit(submit)
            bar = stack.enter_context(progress_bar(progress, total))
            # Named items go one by one: their names travel with each submit, not with a chunk.
            window = self._map_window(submit, ordered, return_exceptions, max_inflight, total, names is None, bar)
            units = window.units(items)
            stack.callback(units.close)
            for unit in units:
                yield from unit

    def _map_window(
        self,
        submit: Submit,
        ordered: bool,
        return_exceptions: bool,
        max_inflight: int | None,
        total: int | None,
        chunked: bool = True,
        bar: Any = NO_BAR,
    ) -> MapWindow:
        """Chunks for cheap stages, journaled or not (the journal records each element), but
        not with ``max_inflight``, which counts items, nor through a batched stage, whose pool
        forms the batches (chunks would bypass it), nor through a stage with a per-item guard
        (``timeout``, ``max_memory``): in a chunk the guard would stop the whole chunk, and its
        offending element would be found only by running it again alone, a second timeout and
        a second worker start."""
        guarded = any(s.batched or s.timeout or s.max_memory is not None for s in self._stages)
        chunked = chunked and not max_inflight and not guarded
        sized = (lambda: self._chunk_size(total)) if chunked else (lambda: 1)
        # A journaled map's items that are answered from the journal never reach a stage: any number fits a unit.
        answered = getattr(submit, "answered_ahead", None)
        return MapWindow(
            submit,
            window=max_inflight or window_size(self._pools.worker_count()),
            chunk_size=sized if answered is None else (lambda: max(sized(), answered())),
            ordered=ordered,
            return_exceptions=return_exceptions,
            bar=bar,
            sizes=self._result_sizes,
        )

    def _chunk_size(self, total: int | None = None) -> int:
        return chunk_size(self._pools.costs(), self._pools.most_replicas(), total)

    def _submit_indexed(self, value: Any, index: int) -> Future[Any]:
        return self._submit_job(value, None, index)

    # -- introspection -------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        """One row per worker: stage, replica, pid, cores, threads, gpus, thread pools seen."""
        return self._pools.workers()

    def plan(self) -> str:
        """The CPU plan as a table: stage, replica, pid, cores, threads, gpus."""
        return self._pools.plan()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per stage: done, failed, queued, in flight, busy and CPU seconds, queue wait, items/s,
        latency p50/p99 (seconds from entering the stage's queue to its result), restarts."""
        return self._pools.stats()

    def __del__(self) -> None:
        if getattr(self, "_state", "closed") in ("running", "starting"):
            warnings.warn("Engine was not closed; use `with Engine(...)`", ResourceWarning, stacklevel=1)


@atexit.register
def _close_forgotten_engines() -> None:
    for engine in list(_open_engines):
        engine.close(cancel=True)
