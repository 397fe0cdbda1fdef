"""One worker process of a stage, seen from the parent: the process, its pipe, and the one thread
that reads the pipe. Its state and ledger (what was sent and not answered) are the
`ledger.ReplicaLedger` every kind of replica shares; `host.LocalHost` starts and stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from multiprocessing.context import BaseContext
from typing import Any

from .. import transport
from ..errors import describe_exit
from ..resources import WorkerBudget
from . import child, protocol
from .ledger import Owner, ReplicaLedger
from .spawn import environment

__all__ = ["Owner", "Replica"]

log = logging.getLogger("parapipe")


class Replica(ReplicaLedger):
    """One worker process and its reader thread."""

    def __init__(self, owner: Owner, budget: WorkerBudget, ctx: BaseContext, boot: child.WorkerBoot) -> None:
        super().__init__(owner, budget)
        self._env = boot.env
        self.conn, self._child_conn = ctx.Pipe(duplex=True)
        # every concrete context has Process; typeshed's BaseContext lacks it
        self.proc = ctx.Process(  # type: ignore[attr-defined]
            target=child.main, args=(self._child_conn, boot), name=f"parapipe:{owner.name}#{budget.replica}"
        )
        self.thread = threading.Thread(
            target=self._read, name=f"parapipe-reader-{owner.name}#{budget.replica}", daemon=True
        )
        self._send_lock = threading.Lock()
        self._sends = 0

    def ended(self, exitcode: int | None) -> str:
        return describe_exit(self.proc.exitcode if exitcode is None else exitcode)

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def start(self) -> None:
        """Exec the worker with its environment in place, so its first import sees the caps."""
        with environment(self._env):
            self.proc.start()
        self._child_conn.close()

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
