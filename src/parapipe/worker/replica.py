"""One worker process of a stage, seen from the parent: the process, its pipe, the one thread
that reads the pipe, and the ledger of what was sent to it and not answered yet.

A `Replica` decides nothing: it reports ``ready``, ``results`` and ``exit`` to its `Owner` (the
pool), which holds the lock that guards every replica's ledger. The fields that change after
start are written only under that lock; the comments on them say which invariants hold.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import threading
from multiprocessing.context import BaseContext
from typing import Any, Protocol

from .. import transport
from ..errors import describe_exit
from ..resources import WorkerBudget
from . import child, protocol
from .dispatch import Task
from .spawn import environment

log = logging.getLogger("parapipe")


class Owner(Protocol):
    """What a replica reports to, from its reader thread."""

    name: str

    def on_ready(self, replica: Replica, info: dict[str, Any]) -> None: ...

    def on_results(self, replica: Replica, rows: list[protocol.Result], unmapped: list[str]) -> None: ...

    def on_unreadable(self, replica: Replica, error: protocol.ExcInfo, key: int | None = None) -> None: ...

    def on_exit(self, replica: Replica) -> None: ...


class Replica:
    """One worker process and its reader thread."""

    def __init__(self, owner: Owner, budget: WorkerBudget, ctx: BaseContext, boot: child.WorkerBoot) -> None:
        self.owner = owner
        self.budget = budget
        self._env = boot.env
        self.conn, self._child_conn = ctx.Pipe(duplex=True)
        # every concrete context has Process; typeshed's BaseContext lacks it
        self.proc = ctx.Process(  # type: ignore[attr-defined]
            target=child.main, args=(self._child_conn, boot), name=f"parapipe:{owner.name}#{budget.replica}"
        )
        self.thread = threading.Thread(
            target=self._read, name=f"parapipe-reader-{owner.name}#{budget.replica}", daemon=True
        )
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
        self._send_lock = threading.Lock()
        self._seq: dict[int, int] = {}
        """Send order of each message in flight, by its first task id: a concurrent worker names
        an unreadable message by it (it answers out of order, so it is not the oldest)."""
        self._sends = 0

    def row(self, **extra: Any) -> dict[str, Any]:
        """This worker as one row of `StagePool.workers` (called under the pool's lock)."""
        b = self.budget
        return {
            "stage": self.owner.name, "replica": b.replica, "pid": self.pid, "state": self.state,
            "cores": self.info.get("cores", b.cores), "threads": b.threads, "gpus": b.gpus,
            "gpu_fraction": b.gpu_fraction, "pools": self.info.get("pools", []), **extra,
        }  # fmt: skip

    def startup_message(self, exitcode: int | None = None) -> str:
        """Why this worker never got ready: its setup() error, else how its process ended."""
        err = self.startup_error
        where = f"stage {self.owner.name!r} replica {self.budget.replica}"
        if err is not None:
            return f"{where}: setup failed with {err.type}: {err.message}\n{err.traceback}"
        return f"{where}: {describe_exit(self.proc.exitcode if exitcode is None else exitcode)} during startup"

    @property
    def msgs(self) -> int:
        return len(self.sent)

    @property
    def held(self) -> int:
        return len(self.inflight)

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def start(self) -> None:
        """Exec the worker with its environment in place, so its first import sees the caps."""
        with environment(self._env):
            self.proc.start()
        self._child_conn.close()

    def discard(self) -> None:
        """Never started (the pool closed first)."""
        self.conn.close()
        self._child_conn.close()

    def listen(self) -> None:
        self.thread.start()

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

    # -- the pipe ------------------------------------------------------------------------------

    def send(self, data: bytes, key: int = -1) -> None:
        """Write one message (``key``: its first task id, numbered in the order written)."""
        with self._send_lock:
            self._seq[key] = self._sends
            self._sends += 1
            try:
                self.conn.send_bytes(data)
            except (OSError, ValueError):
                log.debug("send to %s#%d failed; its reader will handle the exit", self.owner.name, self.budget.replica)

    def _read(self) -> None:
        """The one blocking waiter of this worker's connection."""
        while True:
            try:
                data = self.conn.recv_bytes()
            except (EOFError, OSError):
                break
            try:
                self._handle(data)
            except Exception as exc:  # never die silently: the worker is replaced, its items retried
                log.exception(
                    "stage %r replica %d: a message could not be handled", self.owner.name, self.budget.replica
                )
                self._kill(f"the parent could not handle its message ({type(exc).__name__}: {exc})")
        self.owner.on_exit(self)

    def _handle(self, data: bytes) -> None:
        msg = transport.decode(data)
        transport.release(transport.segment_names(data))  # our mappings outlive the names
        kind = msg[0]
        if kind == protocol.RESULTS:
            self.owner.on_results(self, msg[1], msg[2])
        elif kind == protocol.LOG:
            _emit_log(msg[1])
        elif kind == protocol.READY:
            self.owner.on_ready(self, msg[1])
        elif kind == protocol.FAILED:
            self.startup_error = msg[1]
        elif kind == protocol.UNREADABLE:
            self.owner.on_unreadable(self, msg[1], self.message_at(msg[2]) if len(msg) > 2 else None)

    def _kill(self, reason: str) -> None:
        """End the worker so that its exit (read by this thread as EOF) settles what it held."""
        self.kill_reason = reason
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _emit_log(data: dict[str, Any]) -> None:
    record = logging.makeLogRecord(data)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
