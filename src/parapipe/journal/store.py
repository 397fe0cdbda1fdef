"""What a journaled ``map`` and ``parapipe run`` need from a store, and who holds a lease.

A store is shared by *runners*: each `Journal` object is one, named by its ``owner`` (host,
pid and a random token). A runner *claims* items (they become running under its lease, one
transaction for many keys); it renews its leases while the items run and gives back the ones it
did not finish when it closes. A lease that expired, or whose owner is a dead process on this
machine, may be claimed by anyone: that is how a crashed runner's items run again.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from .codec import Record, State, Write

__all__ = ["JobStore", "format_counts", "new_owner", "owner_is_dead"]

DEFAULT_LEASE = 60.0
"""Seconds a claim lasts without renewal. Runners renew every third of it, so only a runner
that stopped (a crash, a machine gone, a process frozen that long) loses its items."""

Reclaim = Callable[[Record], bool]
"""Says whether a failed item is claimed again (``retry_failed``, or a failure that was not the
item's fault)."""


@runtime_checkable
class JobStore(Protocol):
    """What a journaled ``map`` needs from a store; `Journal` (SQLite) and `PostgresJournal`
    implement it."""

    run: str
    owner: str
    lease: float

    def add(self, keys: Sequence[str], *, payloads: Sequence[Any] | None = None) -> dict[str, Record]: ...
    def lookup(self, keys: Sequence[str]) -> dict[str, Record]: ...
    def claim(self, keys: Sequence[str], *, reclaim: Reclaim | None = None) -> dict[str, Record]: ...
    def apply(self, writes: Sequence[Write]) -> list[int | Exception]: ...
    def renew(self) -> int: ...
    def release(self) -> int: ...


def new_owner() -> str:
    """A runner's name: ``host:pid:token``, unique even when a pid is reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str | None) -> bool:
    """True only for an owner on this machine whose process is gone: its leases need not be
    waited out. An owner elsewhere (or a pid reused by another process) counts as alive."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def format_counts(store: Any) -> str:
    """One line for the CLI, e.g. ``run 'default': 10 items, 7 done, 1 failed, 2 queued``."""
    counts: dict[State, int] = store.counts()
    total = sum(counts.values())
    parts = [f"{n} {state.value}" for state, n in counts.items() if n]
    noun = "item" if total == 1 else "items"
    return ", ".join([f"run {store.run!r}: {total} {noun}", *parts])
