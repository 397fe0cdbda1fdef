"""The dashboard's memory: a sampler that reads the service every second or two and keeps the
last ten minutes, so a page opened late still draws what happened before it came.

The engine's counters are totals since start; a chart of totals only ever climbs. Each sample
therefore holds what changed since the previous one (items/s, the share of the interval a
stage's workers were busy, per-core CPU use) beside the levels (queue depth, latency
quantiles). 429s and worker restarts are events, kept apart as marks on the time axis.
Everything lives in this process's memory and is lost on restart, on purpose: this is a
picture for a person watching, not a store of metrics (``/metrics`` is for Prometheus).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import psutil

from ..resources import usable_cores

__all__ = ["History"]

log = logging.getLogger("parapipe.service")

_Counters = tuple[float, int, int]  # (busy seconds, done, restarts) of one stage


class History:
    """Samples of one `Service` every ``interval`` seconds, the last ``window`` seconds of them.

    `sample` takes one sample now (tests call it directly); `start` runs it on the event loop
    until `stop`. `view` is what ``GET /v1/history`` answers.
    """

    def __init__(
        self, service: Any, *, interval: float = 1.0, window: float = 600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.service = service
        self.interval = interval
        self.window = window
        self._clock = clock
        self._samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=math.ceil(window / interval))
        self._marks: collections.deque[dict[str, Any]] = collections.deque()
        self._cores = [c for c in usable_cores() if c < len(psutil.cpu_times(percpu=True))]
        self._last_t: float | None = None
        self._last_stage: dict[str, _Counters] = {}
        self._last_rejected = 0
        self._last_cpu = _cpu_busy(self._cores)
        self._task: asyncio.Task[None] | None = None
        self._tick: asyncio.Event | None = None

    # -- sampling ----------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        """Read the service once, append the sample (and any marks) and return it."""
        now = self._clock()
        dt = now - self._last_t if self._last_t is not None else None
        replicas = collections.Counter(w["stage"] for w in self.service.worker_rows())
        stages = {}
        for name, row in self.service.stage_stats().items():
            counters = (float(row["busy_s"]), int(row["done"]), int(row["restarts"]))
            stages[name] = self._stage_point(name, row, counters, now, dt, replicas[name])
            self._last_stage[name] = counters
        rejected = int(self.service.admission.rejected)
        if rejected > self._last_rejected:
            self._marks.append({"t": now, "kind": "429", "count": rejected - self._last_rejected})
        self._last_rejected = rejected
        cpu = _cpu_busy(self._cores)
        point = {"t": round(now, 3), "stages": stages, "cpu": _cpu_use(self._last_cpu, cpu)}
        self._last_t, self._last_cpu = now, cpu
        self._samples.append(point)
        while self._marks and self._marks[0]["t"] < now - self.window:
            self._marks.popleft()
        if self._tick is not None:
            self._tick.set()
            self._tick = asyncio.Event()
        return point

    def _stage_point(
        self, name: str, row: dict[str, Any], counters: _Counters, now: float, dt: float | None, replicas: int
    ) -> dict[str, Any]:
        busy, done, restarts = counters
        before = self._last_stage.get(name)
        restarted = restarts - (before[2] if before is not None else 0)  # counted from 0 at engine start
        if restarted > 0:
            self._marks.append({"t": now, "kind": "restart", "stage": name, "count": restarted})
        rate = share = None
        if before is not None and dt:
            rate = round(max(0, done - before[1]) / dt, 3)
            share = round(min(1.0, max(0.0, busy - before[0]) / (dt * max(1, replicas))), 3)
        return {
            "items_per_s": rate,
            "busy": share,
            "queued": row["queued"],
            "in_flight": row["in_flight"],
            "p50_ms": _ms(row["latency_p50_s"]),
            "p99_ms": _ms(row["latency_p99_s"]),
        }

    # -- on the event loop -------------------------------------------------------------------

    def start(self) -> None:
        """Sample every ``interval`` seconds on the running loop until `stop`."""
        self._tick = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="parapipe-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a failed read must not end the charts for the server's lifetime
                log.exception("the dashboard's history could not take a sample")
            await asyncio.sleep(self.interval)

    async def wait_newer(self, since: float, timeout: float) -> None:
        """Return once there is a sample later than ``since``, or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tick is not None and not (self._samples and self._samples[-1]["t"] > since):
            left = deadline - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick.wait(), left)

    def view(self, since: float = 0.0) -> dict[str, Any]:
        """The samples and marks later than ``since`` (epoch seconds), for ``GET /v1/history``."""
        return {
            "interval_s": self.interval,
            "window_s": self.window,
            "cores": self._cores,
            "samples": [s for s in self._samples if s["t"] > since],
            "marks": [m for m in self._marks if m["t"] > since],
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _cpu_busy(cores: list[int]) -> list[tuple[float, float]]:
    """(busy, total) CPU seconds of each core since boot: the difference of two is its use."""
    per_cpu = psutil.cpu_times(percpu=True)
    readings = []
    for t in (per_cpu[c] for c in cores):
        total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)  # guest time is in user too
        readings.append((total - t.idle - getattr(t, "iowait", 0.0), total))
    return readings


def _cpu_use(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> list[float]:
    """Percent busy of each core between two readings."""
    return [
        round(100 * (b1 - b0) / (t1 - t0), 1) if t1 > t0 else 0.0
        for (b0, t0), (b1, t1) in zip(before, after, strict=True)
    ]
