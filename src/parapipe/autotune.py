"""``cpus="auto"``: turn measured per-item costs into threads and replicas per stage.

Costs are CPU seconds per item measured while every auto stage ran one single-thread replica.
CPU time, unlike wall time, barely changes when branches run side by side and compete for
cores, so the measurement stays honest even though the warm-up runs the whole graph.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .graph import latency_tree
from .priority import SLACK_NICE, slack_stages
from .resources import StageRequest, WorkerBudget, plan_latency, plan_static, plan_throughput
from .stage import Stage
from .worker.pool import StagePool


def median_cost(pool: StagePool) -> float:
    samples = list(pool.stats.cpu_per_item)
    return statistics.median(samples) if samples else 0.0


def plan(
    stages: Sequence[Stage], graph: Any, costs: dict[str, float], cores: Sequence[int], mode: str
) -> list[WorkerBudget]:
    """Budgets for every stage: fixed stages keep their request, auto stages get the plan."""
    fixed = {s.stage_name: (s.replicas, int(s.cpus)) for s in stages if s.cpus != "auto"}
    auto = {s.stage_name: costs[s.stage_name] for s in stages if s.cpus == "auto"}
    if mode == "latency":
        shape = plan_latency(latency_tree(graph), costs, len(cores))
        return _shared_budgets(stages, {**{k: shape[k] for k in auto}, **fixed}, cores)
    free = max(1, len(cores) - sum(r * c for r, c in fixed.values()))
    shape = {**plan_throughput(auto, free), **fixed} if auto else dict(fixed)
    slack = slack_stages(latency_tree(graph), costs)
    requests = [_request(s, *shape[s.stage_name], slack=s.stage_name in auto and s.stage_name in slack) for s in stages]
    return plan_static(requests, cores)


def _request(stage: Stage, replicas: int, threads: int, *, slack: bool) -> StageRequest:
    """A planned stage off the critical path yields the cores, unless it set its own ``nice``."""
    gpus = tuple(stage.gpus_for(i) for i in range(replicas)) if stage.gpus else ()
    nice = stage.nice if stage.nice is not None else (SLACK_NICE if slack else 0)
    return StageRequest(stage.stage_name, replicas, threads, gpus, nice)


def _shared_budgets(
    stages: Sequence[Stage], shape: dict[str, tuple[int, int]], cores: Sequence[int]
) -> list[WorkerBudget]:
    """Latency plans let stages that never run at the same time use the same cores."""
    out = []
    for s in stages:
        replicas, threads = shape[s.stage_name]
        for i in range(replicas):
            out.append(WorkerBudget(s.stage_name, i, threads, tuple(cores), s.gpus_for(i), nice=s.nice or 0))
    return out
