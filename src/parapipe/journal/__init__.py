"""The job journal: one row per item, so a run killed at any moment can resume, and several
runners can share the work.

``engine.map(items, journal="run.db", key=...)`` *claims* the keys in batches (new ones are
added, and each becomes running under this runner's lease in the same transaction), runs them,
and records each one *done* / *failed* when its answer comes back; `recovery` queues those
writes to one writer thread that applies a batch per transaction (`Journal.apply`) and renews
the leases. A rerun of the same call answers done and failed keys from the journal and runs the
rest; a second runner on the same journal runs only what no live lease holds. The HTTP service
uses the same store and driver for its jobs, ``parapipe run --follow`` claims the items others
add (``parapipe jobs add``), and ``parapipe jobs`` reads it.

Backends: `Journal` is one SQLite file (one machine); `PostgresJournal` a PostgreSQL database
(runners on several machines). `open_journal` picks one from a path or a ``postgresql://`` URL.

The state machine; `mark_*` raise `JournalError` on any other move::

    from       running  done  failed  cancelled
    queued        yes      -     yes      yes
    running       yes*    yes    yes      yes      * resume: the crashed attempt is "interrupted"
    failed        yes      -      -        -       (only when asked: retry_failed, requeue_failed)
    done, cancelled are final

Two moves are not in the table because no caller asks for them by name: `claim` (queued, or
running under an expired lease, to running under ours) and `release` (running under our lease
back to queued, the attempt logged as interrupted). A runner whose lease expired cannot record
an outcome: the item is another runner's now.

Several calls can share a database: each object is bound to one *run* (a namespace), and keys
are unique within a run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ..errors import JournalError
from .codec import DEFAULT_MAX_RESULT_BYTES, Record, State, ValueNotStorable, Write
from .sqlite import Journal
from .store import DEFAULT_LEASE, JobStore, format_counts

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_RESULT_BYTES",
    "JobStore",
    "Journal",
    "JournalError",
    "PostgresJournal",
    "Record",
    "State",
    "ValueNotStorable",
    "Write",
    "format_counts",
    "is_postgres_url",
    "open_journal",
]

_URL_PREFIXES = ("postgresql://", "postgres://")


def is_postgres_url(target: str | os.PathLike[str]) -> bool:
    return isinstance(target, str) and target.startswith(_URL_PREFIXES)


def open_journal(
    target: str | os.PathLike[str],
    *,
    run: str = "default",
    clock: Callable[[], float] = time.time,
    max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES,
    lease: float = DEFAULT_LEASE,
    owner: str | None = None,
) -> Journal | Any:
    """A `Journal` for a file path, a `PostgresJournal` for a ``postgresql://`` URL."""
    options: dict[str, Any] = {"run": run, "clock": clock, "max_result_bytes": max_result_bytes, "lease": lease}
    if is_postgres_url(target):
        from .postgres import PostgresJournal

        return PostgresJournal(os.fspath(target), owner=owner, **options)
    return Journal(target, owner=owner, **options)


def __getattr__(name: str) -> Any:
    # PostgresJournal imports psycopg, an optional extra: only when asked for.
    if name == "PostgresJournal":
        from .postgres import PostgresJournal

        return PostgresJournal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
