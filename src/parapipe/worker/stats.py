"""Per-stage counters that the engine's stats(), the progress bar and /metrics read."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from .. import nvml
from .protocol import Chunk, ChunkResult


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
    service_ewma: float | None = None
    """Smoothed seconds per item inside the worker; decides chunking."""

    failed_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    """Final failures by error type (``StageError``, ``WorkerDied``, ``TaskTimeout``, ...)."""

    def account(self, enqueued: float, t0: float, t1: float, cpu: float, now: float, n: int) -> None:
        """Timing of one answered task of ``n`` items (a retried attempt too: it used the worker).
        Per-item figures divide a chunk's time by its size, so chunking does not hide cost."""
        self.busy_s += t1 - t0
        self.cpu_s += cpu
        self.cpu_per_item.append(cpu / n)
        self.queue_wait_s += max(0.0, t0 - enqueued)
        self.latencies.append(now - enqueued)
        self.first = enqueued if self.first is None else min(self.first, enqueued)
        self.last = now
        service = (t1 - t0) / n
        ewma = self.service_ewma
        self.service_ewma = service if ewma is None else 0.9 * ewma + 0.1 * service

    def count(self, stage: str, item: Any, ok: bool, value: Any) -> None:
        """Every final outcome of an item in ``stage``, once: done, or failed by kind. Elements
        of a chunk count one by one; those that failed in an earlier stage are not this stage's."""
        if not ok:
            self.failed_with(type(value).__name__, _live_elements(item))
        elif isinstance(value, ChunkResult):
            self.done += len(value) - len(value.errors)
            for kind, n in collections.Counter(
                type(e).__name__ for e in value.errors.values() if e.stage == stage
            ).items():
                self.failed_with(kind, n)
        else:
            self.done += 1

    def failed_with(self, kind: str, n: int = 1) -> None:
        """``n`` items failed for good (never called for an attempt that will be retried)."""
        self.failed += n
        self.failed_by_kind[kind] += n

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
            "failed_by_kind": dict(self.failed_by_kind),
        }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 6)


def _live_elements(item: Any) -> int:
    """Items a task stands for: the elements of a chunk still alive, else one."""
    if isinstance(item, ChunkResult):
        return len(item) - len(item.errors)
    if isinstance(item, Chunk):
        return len(item)
    return 1


def add_gpu_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``gpu_memory_bytes`` and ``gpu_util_pct`` (NVML) to the rows of workers that have GPUs
    and that NVML reports; rows stay as they were without NVML or without GPUs."""
    found = nvml.usage(row["pid"] for row in rows if row["gpus"])
    for row in rows:
        usage = found.get(row["pid"]) if row["gpus"] else None
        if usage is not None:
            row["gpu_memory_bytes"] = usage.memory_bytes
            row["gpu_util_pct"] = usage.util_pct
    return rows


def gpu_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A stage's GPU figures from its workers' rows: memory summed, utilisation summed (percent of
    one device: four workers at 25 % keep one device busy); ``{}`` when no worker has figures."""
    measured = [row for row in rows if "gpu_memory_bytes" in row]
    if not measured:
        return {}
    utils = [row["gpu_util_pct"] for row in measured if row["gpu_util_pct"] is not None]
    return {
        "gpu_memory_bytes": sum(row["gpu_memory_bytes"] for row in measured),
        "gpu_util_pct": round(sum(utils), 1) if utils else None,
    }
