"""Prometheus metrics read from the engine at scrape time.

A custom collector rather than counters updated on every item: the engine already keeps
per-stage statistics (`Engine.stats`), so a scrape reads them once and the item path pays
nothing. Each app has its own registry, so two apps in one process never clash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .runtime import Service

__all__ = ["CONTENT_TYPE", "EngineCollector", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STAGE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("parapipe_stage_items", "done", "Items the stage finished successfully."),
    ("parapipe_stage_errors", "failed", "Items that failed in the stage."),
    ("parapipe_stage_busy_seconds", "busy_s", "Wall seconds the stage's workers spent processing."),
    ("parapipe_stage_cpu_seconds", "cpu_s", "CPU seconds the stage's workers spent processing."),
    ("parapipe_stage_queue_wait_seconds", "queue_wait_s", "Seconds items waited in the stage's queue."),
    ("parapipe_stage_restarts", "restarts", "Worker restarts of the stage (crashes, timeouts, recycling)."),
    ("parapipe_stage_shm_sent_bytes", "shm_bytes_sent", "Bytes the engine wrote to shared memory for its items."),
)
_STAGE_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("parapipe_stage_queue_depth", "queued", "Items waiting for a worker of the stage."),
    ("parapipe_stage_in_flight", "in_flight", "Items sent to the stage's workers and not answered yet."),
    ("parapipe_stage_items_per_second", "items_per_s", "Average throughput of the stage since start."),
)


class EngineCollector(Collector):
    """Per-stage counters and gauges from ``engine.stats()``, plus the service's own state."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        stats = self._service.stage_stats()
        yield from _stage_families(stats)
        yield _latency(stats)
        rows = self._service.worker_rows()
        yield _workers(rows)
        yield from _gpu_families(stats, rows)
        yield from self._service_families()

    def _service_families(self) -> Iterator[Metric]:
        service = self._service
        yield _gauge("parapipe_service_ready", "1 when every stage has a ready worker.", float(service.ready()))
        yield _gauge("parapipe_service_inflight", "Accepted and unfinished requests.", service.admission.inflight)
        yield _gauge("parapipe_service_max_queue", "Admission bound (429 beyond it).", service.admission.limit)
        rejected = CounterMetricFamily("parapipe_service_rejected", "Requests refused with 429.")
        rejected.add_metric([], service.admission.rejected)
        yield rejected
        jobs = GaugeMetricFamily("parapipe_jobs", "Jobs in the journal by state.", labels=["state"])
        for state, n in service.job_counts().items():
            jobs.add_metric([state], n)
        yield jobs


def _stage_families(stats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    for name, key, doc in _STAGE_COUNTERS:
        yield _per_stage(CounterMetricFamily(name, doc, labels=["stage"]), stats, key)
    for name, key, doc in _STAGE_GAUGES:
        yield _per_stage(GaugeMetricFamily(name, doc, labels=["stage"]), stats, key)


def _per_stage(family: Metric, stats: dict[str, dict[str, Any]], key: str) -> Metric:
    add: Callable[..., None] = family.add_metric  # type: ignore[attr-defined]
    for stage, row in stats.items():
        if row.get(key) is not None:
            add([stage], float(row[key]))
    return family


def _latency(stats: dict[str, dict[str, Any]]) -> Metric:
    """p50/p99 as a gauge with a ``quantile`` label: the engine keeps quantiles, not a histogram."""
    family = GaugeMetricFamily(
        "parapipe_stage_latency_seconds",
        "Seconds from entering the stage's queue to its result, by quantile (recent items).",
        labels=["stage", "quantile"],
    )
    for stage, row in stats.items():
        for quantile, key in (("0.5", "latency_p50_s"), ("0.99", "latency_p99_s")):
            if row.get(key) is not None:
                family.add_metric([stage, quantile], float(row[key]))
    return family


def _workers(rows: list[dict[str, Any]]) -> Metric:
    family = GaugeMetricFamily(
        "parapipe_stage_workers", "Worker processes by stage and state.", labels=["stage", "state"]
    )
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        counts[(row["stage"], row["state"])] = counts.get((row["stage"], row["state"]), 0) + 1
    for (stage, state), n in sorted(counts.items()):
        family.add_metric([stage, state], n)
    return family


_GPU_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("gpu_memory_bytes", "gpu_memory_bytes", "GPU memory used (NVML)"),
    ("gpu_utilization_percent", "gpu_util_pct", "Percent of one GPU's SM time used (NVML)"),
)


def _gpu_families(stats: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> Iterator[Metric]:
    """GPU figures per stage and per worker; no family at all where NVML gave none (no GPU, no
    ``nvidia-ml-py``), so a CPU service's /metrics names no GPU."""
    for suffix, key, doc in _GPU_GAUGES:
        stage = GaugeMetricFamily(f"parapipe_stage_{suffix}", f"{doc} by the stage's workers.", labels=["stage"])
        worker = GaugeMetricFamily(f"parapipe_worker_{suffix}", f"{doc} by one worker.", labels=["stage", "replica"])
        for name, row in stats.items():
            if row.get(key) is not None:
                stage.add_metric([name], float(row[key]))
        for row in rows:
            if row.get(key) is not None:
                worker.add_metric([row["stage"], str(row["replica"])], float(row[key]))
        yield from (family for family in (stage, worker) if family.samples)


def _gauge(name: str, doc: str, value: float) -> Metric:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format of every metric in ``registry``."""
    return generate_latest(registry)


def registry_for(service: Service) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(service))
    return registry
