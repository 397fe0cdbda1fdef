"""One running service: the engine, the job journal, admission control and readiness.

The app's lifespan calls `Service.open` and `Service.close`. ``open`` returns at once and loads
the models in the background, so the server answers /healthz (and queues jobs) while workers
run their ``setup()``; /readyz turns 200 when every stage has a ready worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..engine import Engine
from ..errors import EngineClosed, ParapipeError
from ..journal import Journal
from .adapters import ServiceAdapter, adapter_for
from .bridge import ResultBridge
from .config import ServiceConfig
from .errors import NotReady, RequestTimeout, scrub_paths
from .jobs import Admission, JobManager, job_view
from .owners import Owners
from .payloads import ByteBudget, to_jsonable

__all__ = ["Service", "retry_after_seconds"]

log = logging.getLogger("parapipe.service")

_RECENT_JOBS = 20
_MAX_RETRY_AFTER = 3600
"""An hour: past that a client should rather be told to come back much later by other means."""
_PRUNE_EVERY = 600.0
"""Seconds between two prunes of the job journal."""


class _Slot:
    """An admission slot taken by `Service.admitted`; `keep` hands it over to a job."""

    kept = False

    def keep(self) -> None:
        self.kept = True


def retry_after_seconds(inflight: int, stages: dict[str, dict[str, Any]], workers: list[dict[str, Any]]) -> float:
    """Seconds until ``inflight`` accepted items are likely through the slowest stage: its busy
    seconds per item (measured) over its worker count, times the queue; 1 before any measure."""
    per_item = []
    for name, row in stages.items():
        done = (row.get("done") or 0) + (row.get("failed") or 0)
        if done and row.get("busy_s"):
            replicas = max(1, sum(1 for w in workers if w.get("stage") == name))
            per_item.append(row["busy_s"] / done / replicas)
    if not per_item:
        return 1.0
    return float(max(1, min(_MAX_RETRY_AFTER, math.ceil(inflight * max(per_item)))))


def _expire(waiter: asyncio.Future[Any], limit: float) -> None:
    if not waiter.done():
        waiter.set_exception(RequestTimeout(f"no result within {limit:g} s; the item was cancelled"))


class Service:
    """The state behind one app; see the module docstring.

    Args:
        graph: what the engine runs.
        config: the service settings (``config.engine_options`` go to `parapipe.Engine`).
    """

    def __init__(self, graph: Any, config: ServiceConfig) -> None:
        self.graph = graph
        self.config = config
        self._unstarted: Engine | None = Engine(graph, **config.engine_options)  # validates the graph now
        self.adapter: ServiceAdapter = adapter_for(graph)
        """How request bodies become items and what a WebSocket session is (the graph decides)."""
        self.engine: Engine | None = None
        self.state = "new"
        self.failure: str | None = None
        self.started_at = time.time()
        self.admission = Admission(config.max_queue)
        self.body_bytes = ByteBudget(max(config.max_inflight_bytes, config.max_body_bytes))
        """Bytes of bodies being read and of queued jobs' items (`BodyLimit`, `JobManager`)."""
        self.jobs: JobManager | None = None
        self.on_failure: Callable[[ParapipeError], None] | None = None
        """Called with the error when the engine cannot start; `serve` uses it to exit."""
        self._startup: asyncio.Task[None] | None = None
        self._settled: asyncio.Event | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._bridge: ResultBridge | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the journal, queue the jobs a previous run left, and start the engine in the background."""
        self.state, self.failure, self.started_at = "starting", None, time.time()
        self.admission = Admission(self.config.max_queue)
        journal = Journal(self.config.journal_path, run="service", max_result_bytes=self.config.max_body_bytes)
        self.jobs = JobManager(journal, self.admission, Owners(self.config.journal_path), self.body_bytes)
        self.jobs.prune(self.config.job_ttl)
        self.jobs.resume()
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever(), name="parapipe-prune")
        self._settled = asyncio.Event()
        self._startup = asyncio.get_running_loop().create_task(self._start_engine(), name="parapipe-engine-start")

    async def _start_engine(self) -> None:
        engine = self._unstarted or Engine(self.graph, **self.config.engine_options)
        self._unstarted = None
        try:
            await asyncio.to_thread(engine.start)
        except ParapipeError as exc:
            self.state, self.failure = "failed", f"the engine could not start: {exc}"
            log.error("%s", self.failure)
            if self.on_failure is not None:
                self.on_failure(exc)
            return
        finally:
            assert self._settled is not None
            self._settled.set()
        self.engine, self.state = engine, "ready"
        assert self.jobs is not None
        self.jobs.start(engine)
        log.info("engine ready:\n%s", engine.plan())

    async def _prune_forever(self) -> None:
        """Prune the journal every `_PRUNE_EVERY` seconds (or the TTL, when shorter)."""
        assert self.jobs is not None
        jobs = self.jobs
        while True:
            await asyncio.sleep(min(_PRUNE_EVERY, max(1.0, self.config.job_ttl)))
            try:
                await asyncio.to_thread(jobs.prune, self.config.job_ttl)
            except ParapipeError as exc:
                log.error("pruning the job journal failed: %s", exc)

    @contextlib.contextmanager
    def admitted(self) -> Iterator[_Slot]:
        """An admission slot (or `Overloaded`, 429) taken before a request body is read; released
        on exit unless the slot was kept (a job that now holds it)."""
        self.admission.acquire(self.retry_after)
        slot = _Slot()
        try:
            yield slot
        finally:
            if not slot.kept:
                self.admission.release()

    async def wait_started(self, timeout: float) -> None:
        """Return when the engine has started or failed to, or after ``timeout`` seconds."""
        if self._settled is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), timeout)

    async def close(self) -> None:
        """Stop taking work, let running items finish (up to the drain timeout), close everything."""
        if self._startup is not None:
            await self._startup  # Engine.start cannot be interrupted; models finish loading first
        self.state = "stopping"
        if self._pruner is not None:
            self._pruner.cancel()
        if self.jobs is not None:
            await self.jobs.stop()
        if self.engine is not None:
            await asyncio.to_thread(self.engine.close, timeout=self.config.drain_timeout)
        if self.jobs is not None:
            self.jobs.close()
        self.state = "stopped"

    # -- serving -----------------------------------------------------------------------------

    def require_engine(self) -> Engine:
        """The running engine, or `NotReady` (503) while it loads, after it failed, or on shutdown."""
        if self.engine is None or self.state != "ready":
            reason = self.failure or f"the engine is {self.state}; its workers are loading models"
            raise NotReady(reason, retry_after=None if self.failure else 5)
        return self.engine

    def require_jobs(self) -> JobManager:
        if self.jobs is None or self.state in ("failed", "stopping", "stopped"):
            raise NotReady(self.failure or f"the service is {self.state}")
        return self.jobs

    async def run(self, item: Any, timeout: float | None = None, *, admitted: bool = False) -> Any:
        """Process one item now and return its JSON-ready result (or raise its error);
        ``admitted``: the caller holds an admission slot for it (see `admitted`)."""
        engine = self.require_engine()
        if not admitted:
            self.admission.acquire(self.retry_after)
        try:
            try:
                future = engine.submit(item)
            except EngineClosed as exc:
                raise NotReady(f"the service is shutting down: {exc}") from exc
            limit = self.config.request_timeout if timeout is None else timeout
            return to_jsonable(await self._result(future, limit))
        finally:
            if not admitted:
                self.admission.release()

    async def _result(self, future: concurrent.futures.Future[Any], limit: float | None) -> Any:
        """``future``'s result, or `RequestTimeout` after ``limit`` seconds. The item is cancelled
        when the wait ends without it (a timeout, or this request's task cancelled)."""
        loop = asyncio.get_running_loop()
        if self._bridge is None or self._bridge.loop is not loop:
            self._bridge = ResultBridge(loop)
        waiter = self._bridge.watch(future)
        timer = None if limit is None else loop.call_later(limit, _expire, waiter, limit)
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if not future.done():
                future.cancel()

    def retry_after(self) -> float:
        """Seconds until a slot is likely free: the accepted work times the slowest stage's
        measured service time per item (busy seconds per item over its workers)."""
        return retry_after_seconds(self.admission.inflight, self.stage_stats(), self.worker_rows())

    # -- introspection -----------------------------------------------------------------------

    def ready(self) -> bool:
        """True when the engine runs and every stage has at least one ready worker."""
        if self.engine is None or self.state != "ready" or self.stalled() is not None:
            return False
        ready = {row["stage"] for row in self.engine.workers() if row["state"] == "ready"}
        return all(stage in ready for stage in self.engine.stats())

    def stalled(self) -> str | None:
        """Why work no longer progresses though the engine runs (a supervised thread stopped)."""
        return self.jobs.health() if self.jobs is not None else None

    def stage_stats(self) -> dict[str, dict[str, Any]]:
        return self.engine.stats() if self.engine is not None else {}

    def worker_rows(self) -> list[dict[str, Any]]:
        return self.engine.workers() if self.engine is not None else []

    def job_counts(self) -> dict[str, int]:
        return self.jobs.counts() if self.jobs is not None and self.state != "stopped" else {}

    def status(self) -> dict[str, Any]:
        """Everything the dashboard shows, in one JSON document."""
        workers = self.worker_rows()
        stages = [
            {"stage": name, **row, "workers": [w for w in workers if w["stage"] == name]}
            for name, row in self.stage_stats().items()
        ]
        return {
            "service": {
                "state": self.state,
                "ready": self.ready(),
                "failure": scrub_paths(self.failure or self.stalled() or "") or None,
                "uptime_s": round(time.time() - self.started_at, 3),
                "cores": len(os.sched_getaffinity(0)),
                "inflight": self.admission.inflight,
                "max_queue": self.admission.limit,
                "rejected": self.admission.rejected,
                "adapter": self.adapter.name,
            },
            "stages": to_jsonable(stages),
            "jobs": {"counts": self.job_counts(), "recent": self._recent_jobs()},
        }

    def _recent_jobs(self) -> list[dict[str, Any]]:
        if self.jobs is None or self.state == "stopped":
            return []
        total = sum(self.jobs.counts().values())
        records = self.jobs.journal.records(offset=max(0, total - _RECENT_JOBS), limit=_RECENT_JOBS)
        return [job_view(r, with_result=False) for r in reversed(records)]
