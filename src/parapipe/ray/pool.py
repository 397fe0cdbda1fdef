"""A stage's replicas as Ray actors, behind the same facade as a local `StagePool`.

`RayStagePool` *is* a `StagePool`: queueing, batching and message packing (`Dispatcher`), the
retry rule (`RetryPolicy`, chunk `split`), start-up backoff, statistics and delivery are the
local code, run in the driver. Only what touches a replica differs, and is overridden here:
starting one (an actor, not a process), sending it a message (an actor call, not a pipe
write), killing it on a timeout (``ray.kill``), and learning that it died (the actor call
fails, not an EOF).

Restarts: actors are created with ``max_restarts=-1`` and ``max_task_retries=0``. When an
actor's process dies (SIGKILL, OOM, its node lost), Ray restarts it, on another node if need
be, and runs ``setup()`` again; the calls it held fail, and parapipe retries their items by its
own rule (the running message is blamed, the waiting one goes back as it is), exactly as
locally. A replica whose ``setup()`` raised is stopped for good and replaced by a new actor,
under the same backoff as a local worker.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from multiprocessing.context import BaseContext
from typing import Any, cast

import ray
import ray.cloudpickle
import ray.exceptions

from .. import transport
from ..config import DEFAULT_RETRIES
from ..errors import StageError, WorkerDied
from ..plantree import compact_ids
from ..resources import WorkerBudget
from ..worker import protocol
from ..worker.child import WorkerBoot
from ..worker.dispatch import Task
from ..worker.options import WorkerInterpreter
from ..worker.pool import StagePool
from ..worker.replica import Replica
from ..worker.spawn import STOP_GRACE, thread_env
from .actor import ReplicaActor
from .env import actor_runtime_env

__all__ = ["RayReplica", "RayStagePool"]

log = logging.getLogger("parapipe")

_Actor = ray.remote(ReplicaActor)
_Transient = getattr(ray.exceptions, "ActorUnavailableError", ())
"""A call that reached an actor while Ray was restarting it: ask again (Ray >= 2.33)."""
_TRANSIENT_TRIES = 20


class RayReplica(Replica):
    """One actor and the thread that waits for its answers, in the order they were asked.

    It keeps a local replica's ledger (``record``/``answered``/``orphans``, under the pool's
    lock); its process and pipe are replaced by an actor handle and a queue of pending calls.
    """

    def __init__(self, owner: RayStagePool, budget: WorkerBudget, actor: Any) -> None:
        self.owner = owner
        self.budget = budget
        self.actor = actor
        self.thread = threading.Thread(
            target=self._read, name=f"parapipe-ray-{owner.name}#{budget.replica}", daemon=True
        )
        self.state = "starting"
        self.ready = threading.Event()
        self.info: dict[str, Any] = {}
        self.startup_error: protocol.ExcInfo | None = None
        self.inflight: dict[int, Task] = {}
        self.sent: collections.deque[list[int]] = collections.deque()
        self.exclusive = False
        self.kill_reason: str | None = None
        self.segments = transport.SegmentLedger()  # stays empty: Ray moves the large buffers
        self._send_lock = threading.Lock()
        self._seq: dict[int, int] = {}  # the local ledger's send order; unused on Ray
        self._sends = 0
        self._calls: queue.SimpleQueue[tuple[list[int], Any] | None] = queue.SimpleQueue()
        self.death = ""
        """What Ray said when the actor died."""

    @property
    def pid(self) -> int | None:
        pid = self.info.get("pid")
        return int(pid) if pid is not None else None

    def startup_message(self, exitcode: int | None = None) -> str:
        where = f"stage {self.owner.name!r} replica {self.budget.replica}"
        err = self.startup_error
        if err is not None:
            return f"{where}: setup failed with {err.type}: {err.message}\n{err.traceback}"
        return f"{where}: its Ray actor ended during startup: {self.death or 'no reason given'}"

    def call(self, kind: int, payload: list[tuple[int, Any]]) -> None:
        """Ask the actor to run one message; its answer is read in the order of the asking."""
        with self._send_lock:
            ref = self.actor.run.remote(kind, payload)
            self._calls.put(([tid for tid, _ in payload], ref))

    def hang_up(self) -> None:
        self._calls.put(None)

    def _read(self) -> None:
        if self._await_ready():
            self._serve()
        self.owner.on_exit(self)

    def _await_ready(self) -> bool:
        for _ in range(_TRANSIENT_TRIES):
            try:
                ok, info = ray.get(self.actor.describe.remote())
            except _Transient:
                continue
            except ray.exceptions.RayActorError as exc:
                self.death = str(exc)
                return False
            if not ok:
                self.startup_error = info
                return False
            self.owner.on_ready(self, info)
            return True
        self.death = "Ray kept reporting the actor as unavailable"
        return False

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            tids, ref = call
            try:
                rows = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                self.death = str(exc)
                return
            except ray.exceptions.RayError as exc:  # e.g. a result the driver cannot unpickle
                now = time.monotonic()
                error = protocol.ExcInfo(type(exc).__name__, str(exc), "")
                rows = [(tid, False, error, now, now, 0.0) for tid in tids]
            self.owner.on_results(self, rows, [])


class RayStagePool(StagePool):
    """The actors of one stage (see the module docstring for what is shared with local).

    Each actor gets the stage's own ``runtime_env`` (pip packages, a container, variables),
    with the thread-cap variables added where the stage did not set them itself.
    """

    def __init__(
        self,
        stage: Any,
        budgets: list[WorkerBudget],
        *,
        mp_context: BaseContext,
        retries: int = DEFAULT_RETRIES,
        log_level: int | None = None,
    ) -> None:
        super().__init__(stage, budgets, mp_context=mp_context, retries=retries, log_level=log_level)
        self._interpreter = WorkerInterpreter(None, self.name, mp_context)  # python= is Ray's py_executable
        self._stage_bytes = ray.cloudpickle.dumps(stage)
        """By value where pickle goes by reference to ``__main__``: an actor does not import the
        driver's script (a spawned local worker does, as ``__mp_main__``)."""
        if stage.max_memory is not None or stage.max_items_per_worker is not None:
            log.warning("stage %r: max_memory and max_items_per_worker are not applied on Ray (docs/ray.md)", self.name)
        self._actors: dict[int, Any] = {}
        """The live actor of each replica index; Ray restarts it in place after a crash."""

    # -- replicas --------------------------------------------------------------------------

    def _spawn(self, budget: WorkerBudget) -> None:
        with self._spawn_lock:
            if self._closing:
                return
            actor = self._actors.get(budget.replica)
            if actor is None:
                actor = self._actors[budget.replica] = self._new_actor(budget)
            r = RayReplica(self, budget, actor)
            with self._lock:
                self._replicas.append(r)
        r.listen()

    def _new_actor(self, budget: WorkerBudget) -> Any:
        env = thread_env(budget.threads)
        boot = WorkerBoot(
            stage=self.name, replica=budget.replica, threads=budget.threads, cores=(),
            stage_bytes=self._stage_bytes, env=env, log_level=self._log_level,
        )  # fmt: skip
        options = {
            "num_cpus": budget.threads,
            "num_gpus": len(budget.gpus),
            "max_restarts": -1,
            "max_task_retries": 0,
            "runtime_env": actor_runtime_env(getattr(self.stage, "runtime_env", None), env, self.stage.python),
        }
        return _Actor.options(**options).remote(boot)

    def _send(self, r: Any, tids: list[int], tasks: list[Task], kind: int) -> None:
        payload = [(tid, task.item) for tid, task in zip(tids, tasks, strict=True)]
        try:
            r.call(kind, payload)
        except Exception:  # Ray serialises arguments eagerly: find and fail the unpicklable items
            r.call(kind, self._drop_unsendable(r, payload))

    def _drop_unsendable(self, r: RayReplica, payload: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        keep, dropped = [], []
        for tid, item in payload:
            try:
                ray.cloudpickle.dumps(item)
                keep.append((tid, item))
            except Exception as exc:  # reported as this item's error
                with self._lock:
                    task = r.inflight.pop(tid, None)
                if task is not None:
                    msg = f"item cannot be sent to a Ray actor: {exc}"
                    dropped.append((task, False, StageError(self.name, msg, exc_type="ItemNotPicklable")))
        self._settle(dropped)
        return keep  # sent even when empty: the ledger counts one message

    def _on_deadline(self, key: Any) -> None:
        """An item ran past the stage timeout: kill its actor (Ray restarts it); its reader
        then reports the exit, which fails the item with `TaskTimeout`."""
        if isinstance(key, str):
            self.pump()
            return
        with self._lock:
            if key.state != "ready" or not key.inflight:
                return
            for task in key.inflight.values():
                task.timed_out = True
            key.kill_reason = f"an item ran past the stage's timeout of {self.stage.timeout} s"
        ray.kill(key.actor, no_restart=False)

    def on_exit(self, r: Any) -> None:
        with self._lock:
            was_ready = r.state == "ready"
            r.state = "dead"
            if r in self._replicas:
                self._replicas.remove(r)
            blamed, waiting = r.orphans()
            closing = self._closing
        if self._deadlines is not None:
            self._deadlines.disarm(r)
        r.ready.set()
        if closing:
            return
        if not was_ready:
            self._forget(r)  # setup() failed or the actor could not start: a fresh actor next time
            if self._started:  # else wait_ready() reports it to the engine's start()
                self._backoff.failed(r.budget, r.startup_message())
            return
        why = f"parapipe killed it: {r.kill_reason}" if r.kill_reason else f"its actor died: {r.death}"
        log.warning("stage %r replica %d on Ray: %s; Ray restarts it", self.name, r.budget.replica, why)
        with self._lock:
            self.stats.restarts += 1
        self._spawn(r.budget)
        self._requeue_orphans(blamed, waiting, None)

    def _forget(self, r: RayReplica) -> None:
        with self._spawn_lock:
            if self._actors.get(r.budget.replica) is r.actor:
                del self._actors[r.budget.replica]
        ray.kill(r.actor, no_restart=True)

    # -- lifecycle ---------------------------------------------------------------------------

    def repin(self, budgets: list[WorkerBudget]) -> None:
        """Cores are chosen by each actor on its own node (`actor.claim_cores`), not planned."""
        with self._lock:
            self.budgets = list(budgets)

    def close(self, *, timeout: float = STOP_GRACE) -> None:
        """teardown() in every ready actor (up to ``timeout``), then kill them all for good."""
        with self._spawn_lock, self._lock:
            self._closing = True
            orphans = self._dispatch.take_all()
            replicas = cast(list[RayReplica], list(self._replicas))
            actors = list(self._actors.values())
            self._actors.clear()
        self._backoff.close()
        self._settle([(t, False, WorkerDied(self.name, "engine closed before the item ran")) for t in orphans])
        stops = [r.actor.stop.remote() for r in replicas if r.state == "ready"]
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=timeout)
        for actor in actors:
            ray.kill(actor, no_restart=True)
        for r in replicas:
            r.hang_up()
        for r in replicas:
            if r.thread is not threading.current_thread():
                r.thread.join(timeout=STOP_GRACE)
        if self._deadlines is not None:
            self._deadlines.close()
        self._arena.close()

    # -- introspection -------------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        """As locally, plus where each replica runs: Ray node id, node IP and actor id."""
        with self._lock:
            replicas = sorted(self._replicas, key=lambda r: r.budget.replica)
            return [
                {"stage": self.name, "replica": r.budget.replica, "pid": r.pid, "state": r.state,
                 "cores": r.info.get("cores", ()), "threads": r.budget.threads, "gpus": r.budget.gpus,
                 "pools": r.info.get("pools", []), "node": r.info.get("node"), "ip": r.info.get("ip"),
                 "actor": r.info.get("actor")}
                for r in replicas
            ]  # fmt: skip


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
