"""CPU budgets for workers: which cores exist and who gets which (the environment that caps a
worker's thread pools is `parapipe.worker.spawn.thread_env`; GPUs are placed by `parapipe.gpus`).

Everything here is a pure function of its arguments (plus, for `usable_cores`, what the kernel
says about this process), so the engine computes one plan up front and every worker applies its
own slice *before* numpy or torch are imported. Parallel workers whose native thread pools each
assume the whole machine is the classic cause of ten times slower pipelines; the plan prevents it.

Planning comes in three flavours:

* `plan_static`: stages say how many cores each replica wants; cores are split among workers.
* `plan_throughput`: stages were measured (``cpus="auto"``); replicas go to the bottleneck.
* `plan_latency`: one item should finish as soon as possible; threads follow the critical path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from .errors import ConfigError

__all__ = [
    "LatencyTree",
    "StageRequest",
    "WorkerBudget",
    "critical_path",
    "plan_latency",
    "plan_static",
    "plan_throughput",
    "usable_cores",
]

MAX_CPUS_ENV = "PARAPIPE_MAX_CPUS"
"""Environment variable that caps the cores parapipe uses, e.g. to leave room for other services."""

_CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class StageRequest:
    """What one stage asks for; the input of `plan_static`.

    Attributes:
        name: the stage's name, copied into every budget so plans and errors can name it.
        replicas: worker processes for this stage.
        cpus: cores (and thread-pool size) each replica wants.
        gpus: per replica, the GPU ids it sees; empty when the stage uses no GPU.
        nice: CPU priority of each replica (`parapipe.priority`); 0 is the normal one.
    """

    name: str
    replicas: int
    cpus: int
    gpus: tuple[tuple[int, ...], ...] = ()
    nice: int = 0

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError(f"stage {self.name!r}: replicas must be >= 1, got {self.replicas}")
        if self.cpus < 1:
            raise ConfigError(f"stage {self.name!r}: cpus must be >= 1, got {self.cpus}")
        if self.gpus and len(self.gpus) != self.replicas:
            raise ConfigError(
                f"stage {self.name!r}: gpus lists {len(self.gpus)} replicas but the stage has {self.replicas}"
            )


@dataclass(frozen=True)
class WorkerBudget:
    """The slice of the machine one worker process gets.

    Attributes:
        stage: name of the stage the worker serves.
        replica: index of the worker within its stage.
        threads: size of the worker's native thread pools (see `parapipe.worker.spawn.thread_env`).
        cores: cores the worker is pinned to with ``os.sched_setaffinity``.
        gpus: GPU ids the worker sees (see `parapipe.worker.spawn.gpu_env`).
        gpu_fraction: the share of its GPUs' memory it may use (`parapipe.gpus`); None: no cap.
        nice: the worker's CPU priority as a Unix nice value, 0 (normal) to 19 (only what
            others leave); see `parapipe.priority`.
    """

    stage: str
    replica: int
    threads: int
    cores: tuple[int, ...]
    gpus: tuple[int, ...] = ()
    gpu_fraction: float | None = None
    nice: int = 0

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ConfigError(f"stage {self.stage!r}: a worker needs >= 1 thread")
        if not 0 <= self.nice <= 19:
            raise ConfigError(f"stage {self.stage!r}: nice must be 0 to 19, got {self.nice}")


# --------------------------------------------------------------------------- usable cores


def usable_cores(*, cgroup_root: Path = _CGROUP_ROOT) -> tuple[int, ...]:
    """Cores this process may run on, limited by affinity, the cgroup CPU quota and the env cap.

    Affinity alone overstates a container's share: Docker's ``--cpus=2`` leaves every core in
    the affinity mask but throttles the process past two cores' worth of time, so planning for
    all of them would oversubscribe. The quota is turned into a core count and the first cores
    of the affinity mask are kept. ``PARAPIPE_MAX_CPUS`` caps the result further.
    """
    cores = _affinity()
    for limit in (_cgroup_cpu_limit(cgroup_root), _env_cpu_cap()):
        if limit is not None:
            cores = cores[:limit]
    return cores


def _affinity() -> tuple[int, ...]:
    """Sorted cores in this process's affinity mask (all cores where the OS has no masks)."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def _cgroup_cpu_limit(root: Path) -> int | None:
    """Whole CPUs allowed by the cgroup quota under ``root`` (v2, then v1), or None if unlimited."""
    text = _read(root / "cpu.max")
    if text is not None:
        quota, _, period = text.partition(" ")
        return _quota_cpus(quota, period)
    for controller in (root / "cpu", root / "cpu,cpuacct"):
        v1_quota = _read(controller / "cpu.cfs_quota_us")
        v1_period = _read(controller / "cpu.cfs_period_us")
        if v1_quota is not None and v1_period is not None:
            return _quota_cpus(v1_quota, v1_period)
    return None


def _quota_cpus(quota: str, period: str) -> int | None:
    """``ceil(quota / period)``: a quota of 1.5 CPUs still lets two threads make progress."""
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max" (v2 unlimited) or a format we do not know: assume no limit
        return None
    if q <= 0 or p <= 0:  # -1 is v1's "unlimited"
        return None
    return max(1, math.ceil(q / p))


def _read(path: Path) -> str | None:
    """The stripped text of a kernel file, or None where it does not exist or cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _env_cpu_cap() -> int | None:
    """The ``PARAPIPE_MAX_CPUS`` cap, or None when unset; a bad value is an error, not ignored."""
    raw = os.environ.get(MAX_CPUS_ENV, "").strip()
    if not raw:
        return None
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap < 1:
        raise ConfigError(f"{MAX_CPUS_ENV} must be a whole number >= 1, got {raw!r}")
    return cap


# --------------------------------------------------------------------------- static plan


def plan_static(requests: Sequence[StageRequest], cores: Sequence[int]) -> list[WorkerBudget]:
    """One budget per (stage, replica), in request order, giving each worker the cores it asked for.

    When every request fits, workers get disjoint cores: no two pools ever compete for a core,
    and caches stay warm. When they do not fit, pinning would stack several busy workers on one
    core while another sits idle, so every worker may run on all cores and the OS balances them;
    thread pools shrink to a fair share instead, so the total stays within the cores.
    """
    if not cores:
        raise ConfigError("no cores to plan with (check PARAPIPE_MAX_CPUS and the CPU affinity)")
    slots = [(req, r) for req in requests for r in range(req.replicas)]
    wanted = [req.cpus for req, _ in slots]
    if sum(wanted) <= len(cores):
        return _pinned(slots, cores)
    threads = _fair_threads(wanted, len(cores))
    everywhere = tuple(cores)
    return [_budget(req, r, n, everywhere) for (req, r), n in zip(slots, threads, strict=True)]


def _pinned(slots: list[tuple[StageRequest, int]], cores: Sequence[int]) -> list[WorkerBudget]:
    """Hand out consecutive, disjoint runs of cores; the caller checked that they suffice."""
    budgets, start = [], 0
    for req, r in slots:
        budgets.append(_budget(req, r, req.cpus, tuple(cores[start : start + req.cpus])))
        start += req.cpus
    return budgets


def _budget(req: StageRequest, replica: int, threads: int, cores: tuple[int, ...]) -> WorkerBudget:
    gpus = req.gpus[replica] if req.gpus else ()
    return WorkerBudget(req.name, replica, threads, cores, gpus, nice=req.nice)


def _fair_threads(wanted: list[int], ncores: int) -> list[int]:
    """Scale each request to ``wanted * ncores / sum(wanted)`` threads, at least 1, total <= ncores.

    Rounding tiny shares up to 1 can push the total past the cores; the excess is then taken
    from whoever holds most above their fair share, until the total fits or everyone is at 1.
    """
    total = sum(wanted)
    threads = [max(1, w * ncores // total) for w in wanted]
    while sum(threads) > ncores:
        shrinkable = [i for i, n in enumerate(threads) if n > 1]
        if not shrinkable:
            break  # more workers than cores: one thread each is the least we can give
        richest = max(shrinkable, key=lambda i: threads[i] / wanted[i])
        threads[richest] -= 1
    return threads


# --------------------------------------------------------------------------- throughput plan


def plan_throughput(
    costs: Mapping[str, float],
    ncores: int,
    *,
    max_replicas: Mapping[str, int] | None = None,
) -> dict[str, tuple[int, int]]:
    """``{stage: (replicas, threads)}`` that maximises steady-state items/s for measured costs.

    ``costs`` are single-thread CPU seconds per item. A stage with ``r`` workers of ``t``
    threads handles ``r * t / cost`` items/s (threads counted as linear, which flatters them),
    and no plan beats ``ncores / sum(costs)``, the rate at which all cores are busy. Each stage
    starts with one worker of one thread; the next unit always goes to the current bottleneck,
    as one more single-thread replica (processes scale almost linearly, thread pools do not),
    or, for a stage at its ``max_replicas`` cap, as one more thread per replica. Units stop once
    the bottleneck can keep up with the cores, so a stage gets at most ``ceil`` of its
    cost-proportional share and busy cores never exceed ``ncores``. Cheap stages keep their one
    mostly idle worker, so there may be more workers than cores, but not more busy ones.
    """
    caps = _replica_caps(costs, max_replicas or {})
    if ncores < 1:
        raise ConfigError(f"ncores must be >= 1, got {ncores}")
    plan = dict.fromkeys(costs, (1, 1))
    target = _cpu_bound_rate(costs, ncores)
    while plan:
        stage = min(plan, key=lambda s: _rate(costs[s], plan[s]))
        if _rate(costs[stage], plan[stage]) >= target:
            break
        replicas, threads = plan[stage]
        plan[stage] = (replicas + 1, threads) if replicas < caps[stage] else (replicas, threads + 1)
    return plan


def _replica_caps(costs: Mapping[str, float], max_replicas: Mapping[str, int]) -> dict[str, float]:
    """Check costs and caps, and return each stage's replica cap (unbounded where none is set)."""
    for stage, cost in costs.items():
        if not cost >= 0:  # also catches NaN
            raise ConfigError(f"stage {stage!r}: cost must be >= 0 seconds, got {cost}")
    unknown = set(max_replicas) - set(costs)
    if unknown:
        raise ConfigError(f"max_replicas names unknown stage(s) {sorted(unknown)}")
    for stage, cap in max_replicas.items():
        if cap < 1:
            raise ConfigError(f"stage {stage!r}: max_replicas must be >= 1, got {cap}")
    return {stage: max_replicas.get(stage, math.inf) for stage in costs}


def _cpu_bound_rate(costs: Mapping[str, float], ncores: int) -> float:
    """Items/s when every core is busy; a little below, so float noise adds no extra worker."""
    total = sum(costs.values())
    return ncores / total * (1 - 1e-9) if total > 0 else math.inf


def _rate(cost: float, shape: tuple[int, int]) -> float:
    """Items/s of a stage shaped ``(replicas, threads)``; a free stage is never the bottleneck."""
    replicas, threads = shape
    return replicas * threads / cost if cost > 0 else math.inf


# --------------------------------------------------------------------------- latency plan

LatencyTree: TypeAlias = tuple[Literal["stage"], str] | tuple[Literal["seq", "par"], Sequence["LatencyTree"]]
"""How one item flows: ``("stage", name)``, ``("seq", [trees])`` one after another, or
``("par", [trees])`` all at once."""


def plan_latency(tree: LatencyTree, costs: Mapping[str, float], ncores: int) -> dict[str, tuple[int, int]]:
    """``{stage: (1, threads)}`` that minimises the latency of a single item.

    One replica each, since one item never uses two. Children of a ``seq`` never run at the
    same time, so each may use every core its parent has. Children of a ``par`` do, so their
    cores are split to shorten the slowest branch: each core goes to the branch with the most
    critical-path seconds per thread, every branch keeping at least one thread.
    """
    if ncores < 1:
        raise ConfigError(f"ncores must be >= 1, got {ncores}")
    threads: dict[str, int] = {}
    _assign(tree, costs, ncores, threads)
    return {stage: (1, n) for stage, n in threads.items()}


def _assign(tree: LatencyTree, costs: Mapping[str, float], cores: int, out: dict[str, int]) -> None:
    """Record the threads of every stage under ``tree``, which may use ``cores`` cores."""
    kind, body = tree
    if kind == "stage":
        _assign_stage(str(body), costs, cores, out)
    elif kind == "seq":
        for child in _children(body):
            _assign(child, costs, cores, out)
    elif kind == "par":
        weights = [critical_path(child, costs) for child in _children(body)]
        for child, share in zip(_children(body), _par_shares(cores, weights), strict=True):
            _assign(child, costs, share, out)
    else:
        raise ConfigError(f"latency tree node must be 'stage', 'seq' or 'par', got {kind!r}")


def _assign_stage(name: str, costs: Mapping[str, float], cores: int, out: dict[str, int]) -> None:
    if name not in costs:
        raise ConfigError(f"latency tree names stage {name!r}, which has no measured cost")
    if name in out:
        raise ConfigError(f"stage {name!r} appears twice in the latency tree")
    out[name] = cores


def critical_path(tree: LatencyTree, costs: Mapping[str, float]) -> float:
    """Single-thread seconds of the longest chain in ``tree``: sums along seq, max across par."""
    kind, body = tree
    if kind == "stage":
        return costs.get(str(body), 0.0)
    paths = [critical_path(child, costs) for child in _children(body)]
    if kind == "seq":
        return sum(paths)
    return max(paths, default=0.0)


def _children(body: str | Sequence[LatencyTree]) -> Sequence[LatencyTree]:
    """The subtrees of a seq or par node (whose body is never a stage name)."""
    assert not isinstance(body, str)
    return body


def _par_shares(cores: int, weights: list[float]) -> list[int]:
    """Cores per branch of a ``par``.

    When one branch costs more than all the others together (whisper beside two small models),
    splitting the cores would slow exactly the branch that decides the latency: it gets every
    core, and the small branches one thread each; they overlap it only briefly.
    """
    if len(weights) > 1:
        top = max(range(len(weights)), key=weights.__getitem__)
        if weights[top] >= sum(weights) - weights[top]:
            return [cores if i == top else 1 for i in range(len(weights))]
    return _split(cores, weights)


def _split(cores: int, weights: list[float]) -> list[int]:
    """Split cores so the largest ``weight / share`` is smallest; everyone gets at least 1.

    Giving each next core to the current maximum is optimal for this min-max goal (it is the
    D'Hondt apportionment), and it never oversubscribes unless there are more branches than cores.
    """
    shares = [1] * len(weights)
    for _ in range(cores - len(weights) if weights else 0):
        slowest = max(range(len(weights)), key=lambda i: weights[i] / shares[i])
        shares[slowest] += 1
    return shares


# --------------------------------------------------------------------------- rendering
