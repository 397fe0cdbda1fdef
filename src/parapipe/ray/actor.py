"""One replica of a stage as a Ray actor: the remote side of `RayReplica`.

It does what a local worker process does (`parapipe.worker.child`), in the same order: the
thread caps are already in the process environment (Ray starts the actor's worker process with
the ``env_vars`` of its runtime env, before any import), the actor pins itself to cores of its
node that no other parapipe actor holds, and only then is the stage unpickled and ``setup()``
run. Items are handled by the same functions as locally (`worker.execute`), so user errors come
back as the same data; large arrays in arguments and results travel through Ray's object store,
not parapipe's shared memory. ``max_items_per_worker`` and ``max_memory`` apply as locally: the
actor retires between messages (`child.should_retire`), and a memory watch ends its process
when an item passes ``max_memory``, leaving its exit code where the driver reads it
(`take_exit_code`): Ray itself reports no exit codes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
from typing import Any

import psutil

from ..worker import protocol
from ..worker.child import WorkerBoot, build, describe, rss_bytes, should_retire
from .blobs import is_large, split_large
from .items import ItemRunner, runner_for

__all__ = ["ReplicaActor", "claim_cores", "take_exit_code"]

log = logging.getLogger("parapipe")

_EXIT_KEY = "parapipe-exit-{}"
"""Ray's key-value store key of an actor's exit code, by actor id (cluster-wide, unlike a file)."""
_MEMORY_SAMPLE_SECONDS = 0.05

_CLAIMS = os.path.join(tempfile.gettempdir(), "parapipe-ray-cores.json")
"""One file per host: which cores each live parapipe actor process holds (pid -> cores)."""


class ReplicaActor:
    """The stage, built once per actor process (again after Ray restarts the process).

    A ``setup()`` that raises does not fail the actor's constructor: Ray would then report only
    "actor died", and restart it in a loop. The error is kept and `describe` hands it to the
    pool, which stops the actor and applies parapipe's start-up backoff.
    """

    def __init__(self, boot: WorkerBoot) -> None:
        logging.basicConfig(level=boot.log_level)
        self._failure: protocol.ExcInfo | None = None
        self._stage: Any = None
        import ray

        gpus = tuple(int(g) for g in ray.get_gpu_ids())  # Ray chose them and set CUDA_VISIBLE_DEVICES
        self._boot = WorkerBoot(
            stage=boot.stage, replica=boot.replica, threads=boot.threads, cores=claim_cores(boot.threads),
            stage_bytes=boot.stage_bytes, env=boot.env, gpus=gpus, gpu_fraction=boot.gpu_fraction,
            log_level=boot.log_level, max_memory=boot.max_memory, max_items=boot.max_items, nice=boot.nice,
        )  # fmt: skip
        self._lock = threading.Lock()
        """A concurrent stage's actor is threaded: its calls share the counts below."""
        self._served = 0
        self._active = 0
        self._retired = False
        self._items: ItemRunner | None = None
        self._told = False
        """Whether the driver has this process's `describe` yet: a process Ray restarted while
        no call was in flight is new to the driver, and its first answer says so."""
        try:
            self._stage, served = build(self._boot)
            self._items = runner_for(self._stage, served.loop if served is not None else None)
        except BaseException as exc:  # reported by describe(), as a local worker's FAILED message
            self._failure = protocol.ExcInfo.capture(exc)
        if self._stage is not None and boot.max_memory is not None:
            _watch_memory(boot.max_memory, ray.get_runtime_context().get_actor_id() or "")

    def describe(self) -> tuple[bool, Any]:
        """(True, where and how this replica runs) or (False, why setup() failed)."""
        with self._lock:
            self._told = True
        if self._failure is not None:
            return False, self._failure
        import ray

        info = describe(self._boot)
        ctx = ray.get_runtime_context()
        info.update(node=ctx.get_node_id(), actor=ctx.get_actor_id(), ip=ray.util.get_node_ip_address())
        return True, info

    def run(self, kind: int, payload: list[tuple[int, Any]], split: bool = False) -> Any:
        """`answer`, alone, or, with ``split`` (the driver asked for two returns), the answer
        with its large results replaced by `blobs.Blob` markers and those results as the second
        return, which the driver owns (`blobs`)."""
        answer = self.answer(kind, payload)
        if not split:
            return answer
        rows, exitcode, news, _ = answer
        rows, large = split_large(rows)
        return (rows, exitcode, news, False), large

    def answer(
        self, kind: int, payload: list[tuple[int, Any]]
    ) -> tuple[list[protocol.Result], int | None, tuple[bool, Any] | None, bool]:
        """The message's results; `protocol.RECYCLE_EXIT` when this actor retires after it
        (``teardown()`` has run: later calls run nothing, and the driver replaces the actor);
        and `describe` when this is the first call of a process the driver has not seen (Ray
        restarted it while idle), None otherwise; and whether a result was large (`is_large`:
        the driver then splits this stage's calls). A new process whose setup() failed runs nothing.

        In a concurrent actor, the call that retires it runs ``teardown()`` only if no other call
        is running; else the last of them does, unless the driver, replacing the actor, ends it
        first (their items go back to the queue, as a retiring worker's do)."""
        with self._lock:
            first, self._told = not self._told, True
        news = self.describe() if first else None
        if news is not None and not news[0]:
            return [], None, news, False
        with self._lock:
            if self._retired or self._items is None:
                return [], protocol.RECYCLE_EXIT, news, False
            self._active += 1
        rows: list[protocol.Result] = []
        try:
            rows = self._items.run(kind, payload)
        finally:
            with self._lock:
                self._active -= 1
                self._served += len(rows)
                retiring = not self._retired and should_retire(self._boot, self._served)
                self._retired = self._retired or retiring
                last = self._retired and self._active == 0
            if last:
                self.stop()
        large = any(ok and is_large(value) for _, ok, value, *_ in rows)
        return rows, protocol.RECYCLE_EXIT if retiring else None, news, large

    def stop(self) -> None:
        """Run teardown() before the pool kills the actor (as a local worker does on STOP)."""
        with self._lock:
            stage, self._stage = self._stage, None  # once: after retiring, again at close
            items, self._items = self._items, None
        if stage is not None and items is not None:
            with contextlib.suppress(Exception):
                items.complete(stage.teardown())
        if items is not None:
            items.close()


def _watch_memory(limit: int, actor_id: str) -> None:
    """As a local worker's watch (`child`), but the exit code is left in Ray's key-value store
    first: the driver learns only "actor died" from Ray."""
    from ray.experimental import internal_kv

    def watch() -> None:
        idle = threading.Event()
        while not idle.wait(_MEMORY_SAMPLE_SECONDS):
            if rss_bytes() > limit:
                internal_kv._internal_kv_put(_EXIT_KEY.format(actor_id), str(protocol.MEMORY_EXIT).encode())
                os._exit(protocol.MEMORY_EXIT)

    threading.Thread(target=watch, name="parapipe-memory-watch", daemon=True).start()


def take_exit_code(actor_id: str | None) -> int | None:
    """The exit code a dead actor left (`_watch_memory`), once; None when it left none."""
    if actor_id is None:
        return None
    from ray.experimental import internal_kv

    key = _EXIT_KEY.format(actor_id)
    code = internal_kv._internal_kv_get(key)
    if code is None:
        return None
    internal_kv._internal_kv_del(key)
    return int(code)


def claim_cores(threads: int) -> tuple[int, ...]:
    """Cores of this host for this process alone, or () when fewer than ``threads`` are free.

    Ray counts CPUs logically: it knows how many an actor asked for, not which. Actors of
    several parapipe engines (and several Ray nodes on one host, as in tests) share one claims
    file, so two actors are never pinned to the same core; entries of dead processes are
    dropped. An actor that finds no free cores runs unpinned, capped by its thread budget only.
    """
    mine = os.getpid()
    with open(_CLAIMS, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        try:
            claims: dict[str, list[int]] = json.loads(f.read() or "{}")
        except ValueError:  # a torn file from a killed writer: start over
            claims = {}
        claims = {pid: cores for pid, cores in claims.items() if psutil.pid_exists(int(pid)) and int(pid) != mine}
        taken = {c for cores in claims.values() for c in cores}
        free = [c for c in sorted(os.sched_getaffinity(0)) if c not in taken]
        chosen = tuple(free[:threads]) if len(free) >= threads else ()
        if chosen:
            claims[str(mine)] = list(chosen)
        f.seek(0)
        f.truncate()
        f.write(json.dumps(claims))
    if not chosen:
        log.info("pid %d: fewer than %d free cores on this host; running unpinned", mine, threads)
    return chosen
