"""A stage's replicas as Ray actors: the Ray backend's `ReplicaHost`.

The pool is the local `StagePool`, run in the driver: queueing, batching and message packing,
the retry rule, start-up backoff, statistics and delivery. Only what touches a replica differs,
and is here: starting one (an actor, not a process), sending it a message (an actor call, not
a pipe write), killing it on a timeout (``ray.kill``), and learning how it ended (the actor
call fails, not an EOF).

Restarts: actors are created with ``max_restarts=-1`` and ``max_task_retries=0``. When an
actor's process dies (SIGKILL, OOM, its node lost), Ray restarts it, on another node if need
be, and runs ``setup()`` again; the calls it held fail, and parapipe retries their items by its
own rule (the running message is blamed, the waiting one goes back as it is), exactly as
locally. When the process dies while no call is in flight, no call fails: the restarted
process's first answer carries its new `describe` (pid, node, cores), and the replica counts
the restart in `stats()`, logs it and updates its row. A replica whose ``setup()`` raised, or
that retired (``max_items_per_worker``, near ``max_memory``), is stopped for good and replaced
by a new actor.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import ray
import ray.cloudpickle
import ray.exceptions

from .. import transport
from ..config import parse_size
from ..resources import WorkerBudget
from ..stage import Stage
from ..worker import protocol
from ..worker.child import WorkerBoot
from ..worker.dispatch import Task
from ..worker.host import Exit
from ..worker.ledger import Owner, ReplicaLedger
from ..worker.options import is_concurrent
from ..worker.retry import exit_reason
from ..worker.spawn import thread_env
from .actor import ReplicaActor, take_exit_code
from .blobs import resolve
from .env import actor_options

__all__ = ["RayHost", "RayReplica"]

log = logging.getLogger("parapipe")

_Actor = ray.remote(ReplicaActor)
_Transient = getattr(ray.exceptions, "ActorUnavailableError", ())
"""A call that reached an actor while Ray was restarting it: ask again (Ray >= 2.33)."""
_TRANSIENT_TRIES = 20


def _wait(ref: Any) -> Any:
    """The value of one call, raised as `ray.get` raises it.

    Not `ray.get`: a driver here has one reader thread per replica, and on a multi-node
    cluster a blocked `ray.get` may wait for its object from the object store while holding
    the store client's lock for up to ``get_check_signal_interval_milliseconds`` (1 s), so the
    other readers' answers, already there, waited up to a second: items sat idle between
    stages. The future that Ray resolves from its completion callback wakes its waiter at
    once (benchmarks/ray_backend.py: the speech graph on 2 nodes)."""
    return ref.future().result()


class RayReplica(ReplicaLedger):
    """One actor and the thread that waits for its answers, in the order they were asked; its
    ledger is the local replica's (`ReplicaLedger`)."""

    def __init__(
        self,
        owner: Owner,
        budget: WorkerBudget,
        actor: Any,
        on_restart: Callable[[], None],
        concurrent: bool = False,
        split: threading.Event | None = None,
    ) -> None:
        super().__init__(owner, budget)
        self.actor = actor
        self._split = split if split is not None else threading.Event()
        """Set once one of the stage's answers was large: its calls return large results apart
        (`blobs`), shared by the stage's replicas."""
        self._concurrent = concurrent
        """The actor runs several calls at once: answers are read as they finish, not in order."""
        self._on_restart = on_restart
        """Counts a restart the pool did not see (no call failed): `RayHost.restarts`."""
        self.thread = threading.Thread(
            target=self._read, name=f"parapipe-ray-{owner.name}#{budget.replica}", daemon=True
        )
        self._send_lock = threading.Lock()
        self._calls: queue.SimpleQueue[tuple[list[int], Any, Any] | None] = queue.SimpleQueue()
        """Each call's items, its answer and, for a split call, the object of its large results."""
        self.death = ""
        """What Ray said when the actor died."""
        self.exitcode: int | None = None
        """`protocol.RECYCLE_EXIT` once the actor retired, `protocol.MEMORY_EXIT` when it passed
        ``max_memory`` during an item; None when unknown (Ray reports no exit codes)."""

    @property
    def pid(self) -> int | None:
        pid = self.info.get("pid")
        return int(pid) if pid is not None else None

    def ended(self, exitcode: int | None) -> str:
        return f"its Ray actor ended ({self.death or 'no reason given'})"

    def row(self, **extra: Any) -> dict[str, Any]:
        """As locally, plus where the replica runs: Ray node id, node IP and actor id."""
        info = self.info
        return super().row(node=info.get("node"), ip=info.get("ip"), actor=info.get("actor"), **extra)

    def call(self, kind: int, payload: list[tuple[int, Any]]) -> None:
        """Ask the actor to run one message; its answer is read in the order of the asking, or,
        from a concurrent actor, as soon as it is there (a slow item holds up no other)."""
        tids = [tid for tid, _ in payload]
        with self._send_lock:
            if self._split.is_set():
                ref, blobs = self.actor.run.options(num_returns=2).remote(kind, payload, True)
            else:
                ref, blobs = self.actor.run.remote(kind, payload), None
            if not self._concurrent:
                self._calls.put((tids, ref, blobs))
        if self._concurrent:
            ref.future().add_done_callback(lambda _: self._calls.put((tids, ref, blobs)))

    def hang_up(self) -> None:
        self._calls.put(None)

    def _read(self) -> None:
        if self._await_ready():
            self._serve()
        self.owner.on_exit(self)

    def _await_ready(self) -> bool:
        for _ in range(_TRANSIENT_TRIES):
            try:
                ok, info = _wait(self.actor.describe.remote())
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
            tids, ref, blobs = call
            try:
                rows, self.exitcode, news, large = _wait(ref)
            except ray.exceptions.RayActorError as exc:
                self.death = str(exc)
                self.exitcode = take_exit_code(self.info.get("actor"))
                return
            except ray.exceptions.RayError as exc:  # e.g. a result the driver cannot unpickle
                now = time.monotonic()
                error = protocol.ExcInfo(type(exc).__name__, str(exc), "")
                rows, news, large = [(tid, False, error, now, now, 0.0) for tid in tids], None, False
            if large:
                self._split.set()
            elif blobs is not None:
                rows = resolve(rows, blobs)
            if news is not None and not self._restarted(*news):
                return
            if rows:
                self.owner.on_results(self, rows, [])
            if self.exitcode is not None:  # it retired after this message: the rest go back
                return

    def _restarted(self, ok: bool, info: Any) -> bool:
        """Ray restarted the actor's process while it held no call: count it and take its new
        row (True), or, when the new process's setup() failed, end this replica (False): the
        pool then starts the actor afresh, with its start-up backoff."""
        if not ok:
            self.death = f"Ray restarted its process and setup() failed: {info.type}: {info.message}"
            return False
        old = self.info
        log.warning(
            "stage %r replica %d: its Ray actor's process was restarted while idle (pid %s on node %s, now "
            "pid %s on node %s); setup() ran again",
            self.owner.name, self.budget.replica, old.get("pid"), str(old.get("node"))[:12], info.get("pid"),
            str(info.get("node"))[:12],
        )  # fmt: skip
        self._on_restart()
        self.owner.on_ready(self, info)
        return True


class RayHost:
    """The actors of one stage. Each gets the stage's own ``runtime_env`` (pip packages, a
    container, variables), with the thread-cap variables added where the stage did not set
    them itself."""

    def __init__(self, stage: Stage, *, log_level: int | None = None) -> None:
        self._stage = stage
        self._log_level = log_level if log_level is not None else logging.getLogger().getEffectiveLevel()
        self._stage_bytes = ray.cloudpickle.dumps(stage)
        """By value where pickle goes by reference to ``__main__``: an actor does not import the
        driver's script (a spawned local worker does, as ``__mp_main__``)."""
        self._max_memory = parse_size(stage.max_memory)
        self.arena = transport.SegmentArena()  # stays empty: Ray moves the large buffers
        self._lock = threading.Lock()
        self._split = threading.Event()
        """The stage's answers were large once: its calls return them apart (`RayReplica`)."""
        self._actors: dict[int, Any] = {}
        """The live actor of each replica index; Ray restarts it in place after a crash."""
        self.restarts = 0
        """Restarts the pool did not see (`RayReplica._restarted`), added to its count in `stats()`."""

    def check(self) -> None:
        """A stage's ``python=`` is Ray's ``py_executable``: Ray checks it on the node."""

    def start(self, owner: Owner, budget: WorkerBudget) -> RayReplica:
        with self._lock:
            actor = self._actors.get(budget.replica)
            if actor is None:
                actor = self._actors[budget.replica] = self._new_actor(budget)
        return RayReplica(
            owner, budget, actor, self._count_restart, concurrent=is_concurrent(self._stage), split=self._split
        )

    def _count_restart(self) -> None:
        with self._lock:
            self.restarts += 1

    def _new_actor(self, budget: WorkerBudget) -> Any:
        env = thread_env(budget.threads)
        boot = WorkerBoot(
            stage=self._stage.stage_name, replica=budget.replica, threads=budget.threads, cores=(),
            stage_bytes=self._stage_bytes, env=env, gpu_fraction=budget.gpu_fraction, log_level=self._log_level,
            max_memory=self._max_memory, max_items=self._stage.max_items_per_worker, nice=budget.nice,
        )  # fmt: skip
        return _Actor.options(**actor_options(self._stage, budget, env)).remote(boot)

    def send(self, r: RayReplica, kind: int, tids: list[int], tasks: list[Task]) -> None:
        payload = [(tid, task.item) for tid, task in zip(tids, tasks, strict=True)]
        try:
            r.call(kind, payload)
        except Exception:  # Ray serialises arguments eagerly: find and fail the unpicklable items
            bad = _unpicklable(payload)
            if r.owner.unsent(r, tids, bad, []):
                dropped = {tid for tid, _ in bad}
                r.call(kind, [(tid, item) for tid, item in payload if tid not in dropped])

    def kill(self, r: RayReplica) -> None:
        ray.kill(r.actor, no_restart=False)  # Ray restarts it; its reader reports the exit

    def reap(self, r: RayReplica) -> Exit:
        """A replica that never got ready, or retired, is not restarted: the next is a new actor."""
        if r.state != "ready" or r.exitcode == protocol.RECYCLE_EXIT:
            self._forget(r)
        if r.kill_reason is not None or r.exitcode is not None:
            return Exit(r.exitcode, exit_reason(r.kill_reason, r.exitcode, self._max_memory))
        return Exit(None, f"its Ray actor died ({r.death}); Ray restarts it")

    def _forget(self, r: RayReplica) -> None:
        with self._lock:
            if self._actors.get(r.budget.replica) is r.actor:
                del self._actors[r.budget.replica]
        ray.kill(r.actor, no_restart=True)

    def place(self, r: RayReplica, budget: WorkerBudget) -> bool:
        """Cores are chosen by each actor on its own node (`actor.claim_cores`), not planned,
        and a budget's ``nice`` applies when an actor starts (a live actor keeps its own)."""
        return False

    def stop_all(self, replicas: list[RayReplica], timeout: float) -> None:
        """teardown() in every ready actor (up to ``timeout``), then kill them all for good."""
        with self._lock:
            actors = list(self._actors.values())
            self._actors.clear()
        stops = [r.actor.stop.remote() for r in replicas if r.state == "ready"]
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=timeout)
        for actor in actors:
            ray.kill(actor, no_restart=True)
        for r in replicas:
            r.hang_up()

    def describe(self) -> dict[str, Any]:
        return {}


def _unpicklable(payload: list[tuple[int, Any]]) -> list[tuple[int, BaseException]]:
    bad: list[tuple[int, BaseException]] = []
    for tid, item in payload:
        try:
            ray.cloudpickle.dumps(item)
        except Exception as exc:  # reported as this item's error
            bad.append((tid, exc))
    return bad
