"""Joining (or starting) a Ray cluster for an engine, and the pools that run on it."""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from ..errors import ConfigError
from ..plantree import compact_ids
from ..pools import PoolSet
from ..stage import Stage
from .env import actor_gpus
from .host import RayHost

__all__ = ["RayConnection", "RayPoolSet", "connect"]

log = logging.getLogger("parapipe")

_lock = threading.Lock()
_users = 0
"""Engines using a Ray connection that parapipe opened; the last one to close shuts it down."""
_opened = False


class RayConnection:
    """An engine's hold on the Ray instance of this process."""

    def __init__(self, cpus: int) -> None:
        self.cpus = cpus
        self._released = False

    @property
    def cores(self) -> tuple[int, ...]:
        """The cluster's CPUs as a list of logical ids, for the planner: ``cpus="auto"`` plans
        replicas over the whole cluster. They are not the cores actors pin to (each actor
        chooses free cores on its own node)."""
        return tuple(range(self.cpus))

    def release(self) -> None:
        """Disconnect from Ray if parapipe connected and no other engine still uses it."""
        global _users, _opened
        with _lock:
            if self._released:
                return
            self._released = True
            _users -= 1
            if _users or not _opened:
                return
            _opened = False
        ray.shutdown()


def connect(address: str | None) -> RayConnection:
    """Join the Ray instance this process already initialised; else ``ray.init(address)``:
    None starts a local instance, ``"auto"`` joins the cluster ``ray start --head`` runs on
    this machine, ``"host:6379"`` the cluster there, ``"ray://host:10001"`` goes through Ray
    Client."""
    global _users, _opened
    with _lock:
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False if address is None else None)
            except ConnectionError as exc:
                raise ConfigError(
                    f"cannot join a Ray cluster at {address!r}: {exc}. Start one with `ray start --head`, "
                    "or pass ray_address=None to start a local Ray instance"
                ) from exc
            _opened = True
        elif address is not None:
            log.info("Ray is already initialised in this process; ignoring ray_address=%r", address)
        _users += 1
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:
        RayConnection(0).release()
        raise ConfigError("the Ray cluster has no CPU resources; add a node with `ray start --address ...`")
    return RayConnection(cpus)


class RayPoolSet(PoolSet):
    """The engine's pools, each running its replicas on a `RayHost`; the plan says on which
    node each actor runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hosts: dict[str, RayHost] = {}
        """Each stage's current host (a re-planned stage gets a new one, as its pool's counts)."""

    def start(self) -> None:
        """As locally, but first check that the cluster has the CPUs (and GPUs) the stages ask
        for: Ray would leave an actor it cannot place pending, and the engine would wait for
        it until ``startup_timeout``."""
        need_cpus = sum(1 if s.cpus == "auto" else int(s.cpus) * s.replicas for s in self._stages)
        need_gpus = sum(actor_gpus(s, i) for s in self._stages for i in range(s.replicas))
        have = ray.cluster_resources()
        if need_cpus > have.get("CPU", 0) or need_gpus > have.get("GPU", 0):
            raise ConfigError(
                f"the stages ask for {need_cpus} CPUs and {need_gpus} GPUs (cpus x replicas), the Ray cluster "
                f"has {have.get('CPU', 0):g} and {have.get('GPU', 0):g}: add nodes (`ray start --address ...`) "
                "or lower the stages' cpus or replicas"
            )
        super().start()

    def host_for(self, stage: Stage) -> RayHost:
        host = RayHost(stage)
        self._hosts[stage.stage_name] = host
        return host

    def stats(self) -> dict[str, dict[str, Any]]:
        """As locally; ``restarts`` also counts the actors Ray restarted while they held no call
        (no call failed, so the pool saw no exit)."""
        snap = super().stats()
        for name, figures in snap.items():
            host = self._hosts.get(name)
            if host is not None:
                figures["restarts"] += host.restarts
        return snap

    def plan(self) -> str:
        return format_workers(self.workers())


_PLAN_COLUMNS = ("stage", "replica", "node", "actor", "pid", "cores", "threads", "gpus")


def format_workers(rows: list[dict[str, Any]]) -> str:
    """The plan of a Ray engine: where each actor landed, and the cores it pinned itself to."""
    cells = [_PLAN_COLUMNS] + [
        (str(w["stage"]), str(w["replica"]), (w["node"] or "-")[:12], (w["actor"] or "-")[:12],
         "-" if w["pid"] is None else str(w["pid"]), compact_ids(w["cores"]) or "-", str(w["threads"]),
         str(len(w["gpus"])) if w["gpus"] else "")
        for w in rows
    ]  # fmt: skip
    widths = [max(len(c[i]) for c in cells) for i in range(len(_PLAN_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
