"""The worker pools of an engine's stages, started, re-planned and closed together.

The engine owns items (submission, draining, ``map``); this owns processes: the start-up plan,
waiting for every ``setup()``, the re-plan after ``cpus="auto"`` measured the stages, and what
the pools report (workers, plan, statistics).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing.context import BaseContext
from typing import Any

from . import gpus
from .plantree import format_plan
from .resources import StageRequest, WorkerBudget, plan_static
from .stage import Stage
from .worker.host import LocalHost, ReplicaHost
from .worker.pool import StagePool

__all__ = ["PoolSet"]


class PoolSet(Mapping[str, StagePool]):
    """One `StagePool` per stage, by stage name.

    Args:
        stages: the graph's stages.
        mp_context: how workers are started.
        retries: attempts after a worker death before an item fails.
        startup_timeout: seconds every worker has to finish ``setup()``.
        cores: the cores the start-up plan pins workers to.
        gpu_devices: the GPUs to place shared and whole-device stages on; None: discovered, the
            first time a stage needs them (`parapipe.gpus.discover`).
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        mp_context: BaseContext,
        retries: int,
        startup_timeout: float,
        cores: Sequence[int],
        gpu_devices: Sequence[gpus.GpuDevice] | None = None,
    ) -> None:
        self._stages = list(stages)
        self._ctx = mp_context
        self._retries = retries
        self._startup_timeout = startup_timeout
        self._cores = cores
        self._pools: dict[str, StagePool] = {}
        self._gpu_devices = None if gpu_devices is None else tuple(gpu_devices)

    def __getitem__(self, name: str) -> StagePool:
        return self._pools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

    def start(self) -> None:
        """Start every stage on the start-up plan and wait for every ``setup()``; auto stages
        start as one single-thread replica, to be measured."""
        requests = [
            StageRequest(
                s.stage_name,
                s.replicas,
                1 if s.cpus == "auto" else int(s.cpus),
                tuple(s.gpus_for(i) for i in range(s.replicas)) if s.gpus else (),
                s.nice or 0,
            )
            for s in self._stages
        ]
        budgets = gpus.attach(plan_static(requests, self._cores), self._stages, self._devices)
        for s in self._stages:
            self._start(s, [b for b in budgets if b.stage == s.stage_name])
        deadline = time.monotonic() + self._startup_timeout
        for pool in self._pools.values():
            pool.wait_ready(deadline)

    def apply_plan(self, budgets: list[WorkerBudget]) -> None:
        """Keep workers whose budget did not change (their models stay loaded); add replicas
        where only the count grew; restart a stage whose threads or cores changed."""
        deadline = time.monotonic() + self._startup_timeout
        budgets = gpus.attach(budgets, self._stages, self._devices)
        for s in self._stages:
            pool = self._pools[s.stage_name]
            new = [b for b in budgets if b.stage == s.stage_name]
            kept = new[: len(pool.budgets)]
            if [_kept_shape(b) for b in kept] == [_kept_shape(b) for b in pool.budgets]:
                pool.repin(kept)
                pool.grow(new[len(pool.budgets) :], deadline)
                continue
            pool.close()
            self._start(s, new).wait_ready(deadline)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()

    def _devices(self) -> tuple[gpus.GpuDevice, ...]:
        """The GPUs to plan on: given, else discovered once (NVML, ``CUDA_VISIBLE_DEVICES``, torch)."""
        if self._gpu_devices is None:
            self._gpu_devices = gpus.discover()
        return self._gpu_devices

    def _start(self, stage: Stage, budgets: list[WorkerBudget]) -> StagePool:
        """Start a stage's workers (without waiting for their ``setup()``) and register the pool."""
        pool = StagePool(stage, budgets, self.host_for(stage), retries=self._retries)
        self._pools[stage.stage_name] = pool
        pool.start()
        return pool

    def host_for(self, stage: Stage) -> ReplicaHost[Any]:
        """Where a stage's replicas run: processes of this machine (the Ray backend: actors)."""
        return LocalHost(stage, self._ctx)

    # -- what they report --------------------------------------------------------------------

    def worker_count(self) -> int:
        """Workers, counting a concurrent one as the items it runs at once (what ``map`` feeds)."""
        return sum(len(p.budgets) * p.stage.concurrency for p in self._pools.values())

    def most_replicas(self) -> int:
        return max(len(p.budgets) for p in self._pools.values())

    def costs(self) -> list[float | None]:
        """Each stage's measured seconds per item (None until measured)."""
        return [p.cost_per_item() for p in self._pools.values()]

    def workers(self) -> list[dict[str, Any]]:
        return [row for pool in self._pools.values() for row in pool.workers()]

    def plan(self) -> str:
        rows, pythons = [], {}
        for pool in self._pools.values():
            workers = pool.workers()
            pids = {w["replica"]: w["pid"] for w in workers}
            rows += [(b, pids.get(b.replica)) for b in pool.budgets]
            pythons.update({w["stage"]: w["python"] for w in workers if w.get("python")})
        table = format_plan(rows, pythons)
        if not self._gpu_devices or not any(b.gpus for b, _ in rows):
            return table
        return table + "\n\n" + gpus.format_devices(self._gpu_devices, [b for b, _ in rows])

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: pool.snapshot() for name, pool in self._pools.items()}


def _kept_shape(budget: WorkerBudget) -> tuple[int, tuple[int, ...], float | None]:
    """What a running worker cannot change: its thread pools and its GPUs (its cores it can)."""
    return budget.threads, budget.gpus, budget.gpu_fraction
