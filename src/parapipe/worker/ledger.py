"""What the pool knows of one replica, wherever it runs: its state, and the ledger of what was
sent to it and not answered yet.

A local worker process (`replica.Replica`) and a Ray actor (`parapipe.ray.host.RayReplica`)
extend it with how they start, are written to and are read; the pool's dispatch, retry and
supervision code sees only this. A replica decides nothing: it reports ``ready``, ``results``
and ``exit`` to its `Owner` (the pool), which holds the lock that guards every replica's
ledger. The fields that change after start are written only under that lock; the comments on
them say which invariants hold.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from .. import transport
from ..resources import WorkerBudget
from . import protocol
from .dispatch import Task


class Owner(Protocol):
    """What a replica reports to, from its reader thread."""

    name: str

    def on_ready(self, replica: ReplicaLedger, info: dict[str, Any]) -> None: ...

    def on_results(self, replica: ReplicaLedger, rows: list[protocol.Result], unmapped: list[str]) -> None: ...

    def on_unreadable(self, replica: ReplicaLedger, error: protocol.ExcInfo, key: int | None = None) -> None: ...

    def on_exit(self, replica: ReplicaLedger) -> None: ...

    def unsent(
        self, replica: ReplicaLedger, tids: list[int], bad: Sequence[tuple[int, BaseException]], names: list[str]
    ) -> bool: ...


class ReplicaLedger:
    """One replica's state and ledger; subclasses add its process (or actor) and reader thread."""

    thread: threading.Thread
    """The one thread that reads this replica's answers; it calls ``owner.on_exit`` last."""

    def __init__(self, owner: Owner, budget: WorkerBudget) -> None:
        self.owner = owner
        self.budget = budget
        self.state = "starting"
        """starting -> ready -> dead, or starting -> dead (setup failed)."""
        self.ready = threading.Event()
        """Set once the worker is ready, or dead: whoever waits for it learns which from state."""
        self.info: dict[str, Any] = {}
        self.startup_error: protocol.ExcInfo | None = None
        self.inflight: dict[int, Task] = {}
        """Tasks sent and not answered, by task id. Invariant: its keys are the ids in ``sent``,
        less those dropped before sending (unpicklable items)."""
        self.sent: collections.deque[list[int]] = collections.deque()
        """Task ids per message in send order; the first message is the one the worker is running.
        Invariant: len(sent) is the number of messages in flight (`msgs`), at most the prefetch."""
        self.exclusive = False
        """It holds a task that goes alone: it takes nothing else until it answers.
        Invariant: exclusive implies len(sent) == 1."""
        self.kill_reason: str | None = None
        """Why the parent killed this worker, when it did (said instead of guessing from the signal)."""
        self.segments = transport.SegmentLedger()
        self._seq: dict[int, int] = {}
        """Send order of each message in flight, by its first task id: a concurrent worker names
        an unreadable message by it (it answers out of order, so it is not the oldest)."""

    @property
    def pid(self) -> int | None:
        raise NotImplementedError

    def listen(self) -> None:
        self.thread.start()

    def row(self, **extra: Any) -> dict[str, Any]:
        """This worker as one row of `StagePool.workers` (called under the pool's lock)."""
        b = self.budget
        return {
            "stage": self.owner.name, "replica": b.replica, "pid": self.pid, "state": self.state,
            "cores": self.info.get("cores", b.cores), "threads": b.threads, "gpus": b.gpus,
            "gpu_fraction": b.gpu_fraction, "nice": b.nice, "pools": self.info.get("pools", []), **extra,
        }  # fmt: skip

    def startup_message(self, exitcode: int | None = None) -> str:
        """Why this worker never got ready: its setup() error, else how it ended (`ended`)."""
        err = self.startup_error
        where = f"stage {self.owner.name!r} replica {self.budget.replica}"
        if err is not None:
            return f"{where}: setup failed with {err.type}: {err.message}\n{err.traceback}"
        return f"{where}: {self.ended(exitcode)} during startup"

    def ended(self, exitcode: int | None) -> str:
        """How the process (or actor) ended, in words."""
        raise NotImplementedError

    @property
    def msgs(self) -> int:
        return len(self.sent)

    @property
    def held(self) -> int:
        return len(self.inflight)

    # -- the ledger (under the owner's lock) -------------------------------------------------

    def record(self, tids: list[int], tasks: list[Task], exclusive: bool) -> None:
        self.inflight.update(zip(tids, tasks, strict=True))
        self.sent.append(tids)
        self.exclusive = exclusive

    def answered(self, unmapped: list[str], key: int | None = None) -> list[str]:
        """A message was answered: the one whose first task id is ``key``, else the oldest (a
        serial worker answers in order); returns the segments to recycle."""
        if key is None or (self.sent and self.sent[0][0] == key):
            key = self.sent.popleft()[0] if self.sent else -1
        else:
            for tids in self.sent:
                if tids[0] == key:
                    self.sent.remove(tids)
                    break
        self._seq.pop(key, None)
        self.exclusive = False
        return self.segments.answered(key, unmapped)

    def message_at(self, seq: int) -> int | None:
        """The first task id of the message sent ``seq``-th (0-based), if still in flight."""
        return next((key for key, n in list(self._seq.items()) if n == seq), None)

    def unreadable(self, key: int | None) -> tuple[list[Task], list[str]]:
        """The worker could not read a message (the one whose first task id is ``key``, else
        the oldest): it counts as answered; returns its tasks, and the segments to recycle."""
        oldest = self.sent[0] if self.sent else []
        tids = next((t for t in self.sent if t[0] == key), []) if key is not None else oldest
        free = self.answered([], key)
        return [t for t in (self.inflight.pop(tid, None) for tid in tids) if t is not None], free

    def withdraw(
        self, tids: list[int], bad: Sequence[tuple[int, BaseException]], names: list[str]
    ) -> tuple[list[tuple[Task, BaseException]], bool]:
        """A message is about to be written without the items it could not encode (``bad``):
        they leave the ledger, with why; the segments it names (``names``) join it. The bool is
        False when nothing is left to write: the message then counts as answered."""
        dropped = [(task, exc) for tid, exc in bad if (task := self.inflight.pop(tid, None)) is not None]
        if names:
            self.segments.sent(tids[0], names)
        left = any(tid in self.inflight for tid in tids)
        if not left:
            self.answered([], tids[0])
        return dropped, left

    def orphans(self, all_running: bool = False) -> tuple[list[Task], list[Task]]:
        """The worker is gone: (tasks it was running, tasks still waiting in its pipe); the
        ledger is emptied and its segments unlinked. A concurrent worker (``all_running``) may
        have been running every message it held: all of them take the blame."""
        running = {tid for tids in self.sent for tid in tids} if all_running else set(self.sent[0] if self.sent else ())
        blamed = [t for tid, t in self.inflight.items() if tid in running]
        waiting = [t for tid, t in self.inflight.items() if tid not in running]
        self.inflight.clear()
        self.sent.clear()
        self._seq.clear()
        self.exclusive = False
        self.segments.release_all()
        return blamed, waiting
