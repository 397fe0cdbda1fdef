"""One running service: the engine, the job journal, admission control and readiness.

The app's lifespan calls `Service.open` and `Service.close`. ``open`` returns at once and loads
the models in the background, so the server answers /healthz (and queues jobs) while workers
run their ``setup()``; /readyz turns 200 when every stage has a ready worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

from ..engine import Engine
from ..errors import EngineClosed, ParapipeError
from ..journal import Journal
from .adapters import ServiceAdapter, adapter_for
from .config import ServiceConfig
from .errors import NotReady, RequestTimeout
from .jobs import Admission, JobManager, job_view
from .payloads import to_jsonable

__all__ = ["Service"]

log = logging.getLogger("parapipe.service")

_RECENT_JOBS = 20
_MAX_RETRY_AFTER = 60


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
        self.jobs: JobManager | None = None
        self.on_failure: Callable[[ParapipeError], None] | None = None
        """Called with the error when the engine cannot start; `serve` uses it to exit."""
        self._startup: asyncio.Task[None] | None = None
        self._settled: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the journal, queue the jobs a previous run left, and start the engine in the background."""
        self.state, self.failure, self.started_at = "starting", None, time.time()
        self.admission = Admission(self.config.max_queue)
        journal = Journal(self.config.journal_path, run="service", max_result_bytes=self.config.max_body_bytes)
        self.jobs = JobManager(journal, self.admission)
        self.jobs.resume()
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

    async def run(self, item: Any, timeout: float | None = None) -> Any:
        """Process one item now and return its JSON-ready result (or raise its error)."""
        engine = self.require_engine()
        self.admission.acquire(self.retry_after)
        try:
            try:
                future = engine.submit(item)
            except EngineClosed as exc:
                raise NotReady(f"the service is shutting down: {exc}") from exc
            limit = self.config.request_timeout if timeout is None else timeout
            try:
                result = await asyncio.wait_for(asyncio.wrap_future(future), limit)
            except TimeoutError:
                raise RequestTimeout(f"no result within {limit:g} s; the item was cancelled") from None
            return to_jsonable(result)
        finally:
            self.admission.release()

    def retry_after(self) -> float:
        """Seconds until a slot is likely free: the unfinished work over the slowest stage's rate."""
        rates = [s["items_per_s"] for s in self.stage_stats().values() if s.get("items_per_s")]
        if not rates:
            return 1
        return float(max(1, min(_MAX_RETRY_AFTER, math.ceil(self.admission.inflight / min(rates)))))

    # -- introspection -----------------------------------------------------------------------

    def ready(self) -> bool:
        """True when the engine runs and every stage has at least one ready worker."""
        if self.engine is None or self.state != "ready":
            return False
        ready = {row["stage"] for row in self.engine.workers() if row["state"] == "ready"}
        return all(stage in ready for stage in self.engine.stats())

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
                "failure": self.failure,
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
