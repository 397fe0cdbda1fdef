"""/metrics shows GPU gauges only where NVML gave figures: a CPU service's metrics name no GPU."""

from __future__ import annotations

import types
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from parapipe.service.metrics import EngineCollector, render


def _scrape(stats: dict[str, dict[str, Any]], workers: list[dict[str, Any]]) -> dict[str, dict[tuple, float]]:
    service = types.SimpleNamespace(
        stage_stats=lambda: stats,
        worker_rows=lambda: workers,
        ready=lambda: True,
        admission=types.SimpleNamespace(inflight=0, limit=8, rejected=0),
        job_counts=lambda: {},
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(service))  # type: ignore[arg-type]
    return {
        f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
        for f in text_string_to_metric_families(render(registry).decode())
    }


def test_no_gpu_family_without_figures() -> None:
    got = _scrape({"m": {"done": 1}}, [{"stage": "m", "replica": 0, "state": "ready", "gpus": ()}])
    assert not [name for name in got if "gpu" in name]


def test_gpu_gauges_per_stage_and_per_worker() -> None:
    stats = {"m": {"done": 1, "gpu_memory_bytes": 3.0e9, "gpu_util_pct": 55.0}, "cpu": {"done": 1}}
    workers = [
        {"stage": "m", "replica": 0, "state": "ready", "gpus": (0,), "gpu_memory_bytes": 1.0e9, "gpu_util_pct": 20.0},
        {"stage": "m", "replica": 1, "state": "ready", "gpus": (0,), "gpu_memory_bytes": 2.0e9, "gpu_util_pct": None},
        {"stage": "cpu", "replica": 0, "state": "ready", "gpus": ()},
    ]
    got = _scrape(stats, workers)
    assert got["parapipe_stage_gpu_memory_bytes"] == {(("stage", "m"),): 3.0e9}
    assert got["parapipe_stage_gpu_utilization_percent"] == {(("stage", "m"),): 55.0}
    assert got["parapipe_worker_gpu_memory_bytes"] == {
        (("replica", "0"), ("stage", "m")): 1.0e9, (("replica", "1"), ("stage", "m")): 2.0e9}  # fmt: skip
    assert got["parapipe_worker_gpu_utilization_percent"] == {(("replica", "0"), ("stage", "m")): 20.0}
