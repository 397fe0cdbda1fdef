"""Where a stage's replicas run: the seam between the pool's policy and a replica's process.

`StagePool` decides (what goes where, retries, restarts, statistics); a `ReplicaHost` does what
touches a replica: start one, write a message to it, kill it when an item runs past its
timeout, learn how it ended, stop them all. `LocalHost` runs worker processes on this machine
with a pipe each; the Ray backend's ``RayHost`` runs actors. The pool calls the host once per
message or per replica event, never per item.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from multiprocessing.context import BaseContext
from typing import Any, NamedTuple, Protocol, TypeVar

from .. import transport
from ..config import parse_size, spin_seconds
from ..priority import lower_priority
from ..resources import WorkerBudget
from ..stage import Stage
from ..stagewire import dump_stage
from . import child, protocol
from .dispatch import Task
from .encode import MessageEncoder
from .ledger import Owner, ReplicaLedger
from .options import WorkerInterpreter
from .replica import Replica
from .retry import exit_reason
from .spawn import STOP_GRACE, gpu_env, stop_process, thread_env

__all__ = ["Exit", "LocalHost", "ReplicaHost"]

log = logging.getLogger("parapipe")

R = TypeVar("R", bound=ReplicaLedger)


class Exit(NamedTuple):
    """How a replica ended: its exit code where one is known (`protocol.RECYCLE_EXIT`: it
    retired on purpose; `protocol.MEMORY_EXIT`: it passed ``max_memory``), and why, in words."""

    code: int | None
    reason: str


class ReplicaHost(Protocol[R]):
    """What `StagePool` asks of the place its replicas run (see the module docstring)."""

    arena: transport.SegmentArena
    """The segments messages to these replicas are written in (the pool recycles them)."""

    def check(self) -> None:
        """Before the first replica starts: raise if none could (e.g. a missing interpreter)."""

    def start(self, owner: Owner, budget: WorkerBudget) -> R:
        """Start one replica (under the pool's spawn lock); the pool registers it and calls
        ``listen()``. It reports to ``owner``."""

    def send(self, replica: R, kind: int, tids: list[int], tasks: list[Task]) -> None:
        """Write one message; items that cannot be encoded go to ``replica.owner.unsent`` first."""

    def kill(self, replica: R) -> None:
        """End a replica now (its item ran past the timeout); its reader then reports the exit."""

    def reap(self, replica: R) -> Exit:
        """The replica's reader ended: release what it held, say how it ended."""

    def place(self, replica: R, budget: WorkerBudget) -> bool:
        """Move a live replica to the budget's cores and CPU priority (`parapipe.priority`);
        False where this host does not place replicas."""

    def stop_all(self, replicas: list[R], timeout: float) -> None:
        """Stop every replica (``teardown()`` first, within ``timeout``), killing stragglers."""

    def describe(self) -> dict[str, Any]:
        """Columns added to each replica's row of `StagePool.workers`."""


class LocalHost:
    """Replicas as worker processes of this machine, each with a duplex pipe."""

    def __init__(self, stage: Stage, mp_context: BaseContext, *, log_level: int | None = None) -> None:
        self._stage = stage
        self._interpreter = WorkerInterpreter(stage.python, stage.stage_name, mp_context)
        self._log_level = log_level if log_level is not None else logging.getLogger().getEffectiveLevel()
        self._stage_bytes = dump_stage(stage)
        self._max_memory = parse_size(stage.max_memory)
        self._spin = spin_seconds()
        self.arena = transport.SegmentArena(spare=True)
        self._encoder = MessageEncoder(self.arena)

    def check(self) -> None:
        self._interpreter.context()

    def start(self, owner: Owner, budget: WorkerBudget) -> Replica:
        env = {**thread_env(budget.threads), **gpu_env(budget.gpus)}
        ctx = self._interpreter.context()
        boot = child.WorkerBoot(
            stage=self._stage.stage_name, replica=budget.replica, threads=budget.threads, cores=budget.cores,
            stage_bytes=self._stage_bytes, env=env, gpus=budget.gpus, gpu_fraction=budget.gpu_fraction,
            log_level=self._log_level, max_memory=self._max_memory, max_items=self._stage.max_items_per_worker,
            spin=self._spin, python=self._interpreter.python, nice=budget.nice,
        )  # fmt: skip
        r = Replica(owner, budget, ctx, boot)
        r.start()
        return r

    def send(self, r: Replica, kind: int, tids: list[int], tasks: list[Task]) -> None:
        data, names, bad = self._encoder.encode(kind, [(tid, task.item) for tid, task in zip(tids, tasks, strict=True)])
        if (not bad and not names) or r.owner.unsent(r, tids, bad, names):  # the common message: no lock round
            r.send(data, tids[0])

    def kill(self, r: Replica) -> None:
        if r.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.pid, signal.SIGKILL)

    def reap(self, r: Replica) -> Exit:
        r.proc.join(timeout=STOP_GRACE)
        exitcode = r.proc.exitcode
        if r.pid is not None:
            transport.sweep_spares(r.pid)  # a worker killed while it held a spare segment
        r.conn.close()
        return Exit(exitcode, exit_reason(r.kill_reason, exitcode, self._max_memory))

    def place(self, r: Replica, budget: WorkerBudget) -> bool:
        if r.pid is not None:
            child.pin_all_threads(budget.cores, r.pid)
            lower_priority(budget.nice, r.pid)
        return True

    def stop_all(self, replicas: list[Replica], timeout: float) -> None:
        """STOP message, then join, terminate and kill in that order."""
        for r in replicas:
            r.send(protocol.dumps((protocol.STOP,)))
        deadline = time.monotonic() + timeout
        for r in replicas:
            stop_process(r.proc, deadline)

    def describe(self) -> dict[str, Any]:
        return self._interpreter.describe()
