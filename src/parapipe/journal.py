"""The job journal: one SQLite row per item, so a run killed at any moment can resume.

``engine.map(items, journal="run.db", key=...)`` adds the keys as *queued* (a batch per
transaction), marks each item *running* when it is sent and *done* / *failed* when its answer
comes back; `recovery` queues those moves to one writer thread that applies a batch per
transaction (`Journal.apply`). A rerun of the same call skips done and failed keys (returning
their stored results and errors) and re-runs what `pending` returns, so each result reaches the
caller once even if the parent was SIGKILLed. The HTTP service uses the same store and driver
for its jobs and the ``parapipe jobs`` CLI reads it.

Why SQLite in WAL mode: it ships with Python; every state change is one small transaction that
a killed process cannot half-write (the WAL is replayed on the next open); and readers (the CLI,
the service's pages) never block the writer. ``synchronous=NORMAL`` keeps commits safe against
a process crash, which is what we guard against, without paying an fsync per item; only a power
cut can lose the last few commits, and those items just run again.

The state machine; `mark_*` raise `JournalError` on any other move::

    from       running  done  failed  cancelled
    queued        yes      -     yes      yes
    running       yes*    yes    yes      yes      * resume: the crashed attempt is "interrupted"
    failed        yes      -      -        -       (only when asked: retry_failed, requeue_failed)
    done, cancelled are final

Several calls can share a file: each `Journal` is bound to one *run* (a namespace), and keys
are unique within a run. `JobStore` is the part of it that a journaled ``map`` needs (``add`` and
``apply``), the interface another backend would implement.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .errors import ItemError, JournalError

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "JobStore",
    "Journal",
    "JournalError",
    "Record",
    "State",
    "Write",
    "format_counts",
]

# A result larger than this is not kept (the item still counts as done): a journal full of
# model outputs would grow without bound and make every page of the CLI slow to read. The
# journals ``map`` opens itself keep every result (``max_result_bytes=None``): there the
# journal is the only place a done item's result can come back from on resume.
DEFAULT_MAX_RESULT_BYTES = 1 << 20

# Bumped when the tables change; a file from a newer parapipe is refused, never rewritten.
_SCHEMA_VERSION = 1

# SQLite before 3.32 allows at most 999 host parameters per statement.
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq          INTEGER PRIMARY KEY,
    run          TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    state        TEXT    NOT NULL
                 CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    retryable    INTEGER NOT NULL DEFAULT 0,
    created      REAL    NOT NULL,
    started      REAL,
    finished     REAL,
    error        TEXT,
    result_kind  TEXT,
    result       BLOB,
    payload_kind TEXT,
    payload      BLOB,
    UNIQUE (run, key)
);
CREATE INDEX IF NOT EXISTS items_by_state ON items (run, state, seq);
CREATE TABLE IF NOT EXISTS attempts (
    run      TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    attempt  INTEGER NOT NULL,
    state    TEXT    NOT NULL,
    error    TEXT,
    started  REAL,
    finished REAL,
    PRIMARY KEY (run, key, attempt)
);
"""

# Blobs last: SQLite walks a large value's overflow pages to reach the columns after it.
_COLUMNS = (
    "key, run, state, attempts, retryable, created, started, finished, error,"
    " result_kind, result, payload_kind, payload"
)


class State(str, Enum):
    """Where an item is in its life; the values are what the database and the HTTP API show."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


# For each target state, the states an item may come from.
_SOURCES: dict[State, frozenset[State]] = {
    State.RUNNING: frozenset({State.QUEUED, State.RUNNING, State.FAILED}),
    State.DONE: frozenset({State.RUNNING}),
    State.FAILED: frozenset({State.QUEUED, State.RUNNING}),
    State.CANCELLED: frozenset({State.QUEUED, State.RUNNING}),
}

# The attempt log's state for an attempt whose process died before it reported back.
_INTERRUPTED = "interrupted"


class _Change(NamedTuple):
    """A `Write` ready for SQL: values encoded, the error as its JSON text."""

    key: str
    state: State
    result: _Blob | None
    error: str | None
    retryable: bool


class _Blob(NamedTuple):
    """A stored value: ``("json", text)`` when it round-trips through JSON, else a pickle."""

    kind: str
    data: str | bytes


@dataclass(frozen=True)
class Record:
    """One item as the journal last saw it.

    ``result`` and ``payload`` are decoded on first access, so listing jobs (the CLI, the
    service's pages) never unpickles objects whose classes the reader may not even import.
    """

    key: str
    run: str
    state: State
    attempts: int
    created: float
    started: float | None = None
    finished: float | None = None
    error: dict[str, Any] | None = None
    retryable: bool = False
    _result: _Blob | None = field(default=None, repr=False)
    _payload: _Blob | None = field(default=None, repr=False)

    @property
    def result_stored(self) -> bool:
        """False for a done item whose result was over ``max_result_bytes``."""
        return self._result is not None

    @cached_property
    def result(self) -> Any:
        """The value given to `Journal.mark_done`, or None when none was stored."""
        return _decode(self._result)

    @cached_property
    def payload(self) -> Any:
        """The item itself, when `Journal.add` was given payloads (else None)."""
        return _decode(self._payload)

    def item_error(self) -> ItemError | None:
        """The stored error rebuilt as the `ItemError` it was recorded from."""
        return ItemError.from_dict(self.error) if self.error is not None else None


class Write(NamedTuple):
    """One state change for `Journal.apply`: item ``key`` moves to ``state``."""

    key: str
    state: State
    result: Any = None
    error: Mapping[str, Any] | ItemError | None = None
    retryable: bool = False


@runtime_checkable
class JobStore(Protocol):
    """What a journaled ``map`` needs from a store; `Journal` is the SQLite one."""

    run: str

    def add(self, keys: Sequence[str], *, payloads: Sequence[Any] | None = None) -> dict[str, Record]: ...
    def apply(self, writes: Sequence[Write]) -> list[int | JournalError]: ...


class Journal:
    """A `JobStore` in one SQLite file, safe to share between the threads of a process.

    Args:
        path: the database file; created with its tables when missing.
        run: the namespace this object reads and writes; other runs in the file are untouched.
        clock: gives the ``created`` / ``started`` / ``finished`` times (inject one in tests).
        max_result_bytes: results whose encoding is larger are not stored (see `Record`);
            None stores every result.
        busy_timeout: seconds to wait for another process's write lock before failing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        run: str = "default",
        clock: Callable[[], float] = time.time,
        max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = os.fspath(path)
        self.run = run
        self._clock = clock
        self._max_result_bytes = max_result_bytes
        # One connection for all threads: SQLite serialises writers anyway, and a lock held
        # around each transaction is simpler than a connection per thread to close.
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = _connect(self.path, busy_timeout)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({self.path!r}, run={self.run!r})"

    def close(self) -> None:
        """Close the file. Idempotent; any later call raises `JournalError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- writes ------------------------------------------------------------------------------

    def add(
        self, keys: Sequence[str], *, payloads: Sequence[Any] | None = None
    ) -> dict[str, Record]:
        """Insert the keys not yet in this run as queued, all in one transaction.

        Returns the records of the keys that were already there, so the caller can skip the
        done ones and re-run the rest. ``payloads`` (one per key) are stored with the new keys
        only, for a service that must rebuild its queue after a restart.
        """
        keys = list(keys)
        _check_keys(keys)
        blobs = _payload_blobs(keys, payloads)
        with self._write() as conn:
            existing = self._select_keys(conn, keys)
            now = self._clock()
            conn.executemany(
                "INSERT INTO items (run, key, state, created, payload_kind, payload)"
                " VALUES (?, ?, 'queued', ?, ?, ?)",
                (
                    (self.run, key, now, *_columns(blob))
                    for key, blob in zip(keys, blobs, strict=True)
                    if key not in existing
                ),
            )
        return existing

    def apply(self, writes: Sequence[Write]) -> list[int | JournalError]:
        """Apply the state changes in order, all in one transaction.

        Each answer is the attempt number a RUNNING write started (0 for the other states), or
        the `JournalError` that refused that one write (a move the state table forbids, a value
        that cannot be stored); a refused write leaves the others applied.
        """
        prepared = [self._prepare(write) for write in writes]  # encoding needs no lock
        answers: list[int | JournalError] = []
        with self._write() as conn:
            now = self._clock()
            for change in prepared:
                try:
                    if isinstance(change, JournalError):
                        raise change
                    answers.append(self._apply_one(conn, change, now))
                except JournalError as refused:
                    answers.append(refused)
        return answers

    def mark_running(self, key: str) -> int:
        """Start an attempt and return its number (1 for the first): ``started`` = now, and
        the last error is cleared.

        Allowed from running too: after a crash the item is still marked running, and the
        attempt that the dead process left open is logged as interrupted.
        """
        return self._apply_strict(Write(key, State.RUNNING))

    def mark_done(self, key: str, result: Any) -> None:
        """Finish the item with its result (JSON when it round-trips exactly, else a pickle)."""
        self._apply_strict(Write(key, State.DONE, result))

    def mark_failed(self, key: str, error: Mapping[str, Any] | ItemError, *, retryable: bool) -> None:
        """Finish the item with an error; ``retryable`` records that a rerun may succeed (a
        worker death or a timeout), for `pending` (``include_failed``) and for people."""
        self._apply_strict(Write(key, State.FAILED, error=error, retryable=retryable))

    def mark_cancelled(self, key: str) -> None:
        """Cancel a queued or running item; it is never run again."""
        self._apply_strict(Write(key, State.CANCELLED))

    def prune(self, finished_before: float) -> list[str]:
        """Drop the payloads of every finished and cancelled item, delete those finished before
        ``finished_before`` (a `time.time`), and give the space back to the file system when
        much was freed; returns the deleted keys. Keeps a long-running service's file bounded."""
        final = ("done", "failed", "cancelled")
        with self._write() as conn:
            conn.execute(
                "UPDATE items SET payload = NULL, payload_kind = NULL WHERE run = ? AND state IN (?, ?, ?) "
                "AND payload IS NOT NULL",
                (self.run, *final),
            )
            rows = conn.execute(
                "SELECT key FROM items WHERE run = ? AND state IN (?, ?, ?) AND COALESCE(finished, created) < ?",
                (self.run, *final, finished_before),
            ).fetchall()
            keys = [str(r[0]) for r in rows]
            conn.executemany("DELETE FROM attempts WHERE run = ? AND key = ?", [(self.run, k) for k in keys])
            conn.executemany("DELETE FROM items WHERE run = ? AND key = ?", [(self.run, k) for k in keys])
        with self._lock, _translated(self.path):
            conn = self._connection()
            free, total = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("freelist_count", "page_count"))
            if self.path != ":memory:" and free * 2 > total:
                conn.execute("VACUUM")
        return keys

    def requeue_failed(self) -> int:
        """Put every failed item of the run back in the queue; returns how many.

        For ``parapipe jobs run.db --retry-failed``: the next resume then re-runs them. Their
        errors stay in the attempt log.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE items SET state = 'queued', error = NULL, retryable = 0, finished = NULL"
                " WHERE run = ? AND state = 'failed'",
                (self.run,),
            )
            return cursor.rowcount

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        """The item's record, or None when the key was never added to this run."""
        rows = self._select("key = ?", (key,))
        return rows[0] if rows else None

    def pending(self, *, include_failed: bool = False) -> list[Record]:
        """What a resume must run, in insertion order: queued and running (interrupted) items.

        A failed item stays failed, whatever failed it: it already had its retries. With
        ``include_failed`` the failed items are included too (a resume asked to retry them).
        """
        states = "('queued', 'running', 'failed')" if include_failed else "('queued', 'running')"
        return self._select(f"state IN {states}", ())

    def counts(self) -> dict[State, int]:
        """How many items of the run are in each state (every state present, zero or not)."""
        rows = self._query(
            "SELECT state, COUNT(*) FROM items WHERE run = ? GROUP BY state", (self.run,)
        )
        found = {State(state): n for state, n in rows}
        return {state: found.get(state, 0) for state in State}

    def records(
        self, state: State | None = None, *, offset: int = 0, limit: int | None = 100
    ) -> list[Record]:
        """One page of the run's items in insertion order, optionally of one state only.

        ``limit=None`` returns everything from ``offset`` on.
        """
        if offset < 0 or (limit is not None and limit < 0):
            raise JournalError(f"offset and limit must be >= 0, got {offset} and {limit}")
        page = {"offset": offset, "limit": -1 if limit is None else limit}
        if state is None:
            return self._select("1", (), **page)
        return self._select("state = ?", (State(state).value,), **page)

    def attempt_log(self, key: str) -> list[dict[str, Any]]:
        """Every attempt at the item, oldest first, for showing retries (empty if unknown).

        Each entry has ``attempt``, ``state`` (a `State` value or ``"interrupted"`` when the
        process died mid-attempt), ``error``, ``started`` and ``finished``.
        """
        rows = self._query(
            "SELECT attempt, state, error, started, finished FROM attempts"
            " WHERE run = ? AND key = ? ORDER BY attempt",
            (self.run, key),
        )
        return [
            {
                "attempt": attempt,
                "state": state,
                "error": _loads_error(error),
                "started": started,
                "finished": finished,
            }
            for attempt, state, error, started, finished in rows
        ]

    def runs(self) -> list[str]:
        """The names of every run with items in this file, oldest first."""
        rows = self._query("SELECT run FROM items GROUP BY run ORDER BY MIN(seq)", ())
        return [run for (run,) in rows]

    # -- internals ---------------------------------------------------------------------------

    def _prepare(self, write: Write) -> _Change | JournalError:
        """The write with its values encoded; a value that cannot be stored refuses it."""
        try:
            result = _encode(write.result, self._max_result_bytes) if write.state is State.DONE else None
        except JournalError as exc:
            return exc
        error = write.error.to_dict() if isinstance(write.error, ItemError) else write.error
        text = _dumps_error(dict(error) if error is not None else None)
        return _Change(write.key, State(write.state), result, text, write.retryable)

    def _apply_strict(self, write: Write) -> int:
        answer = self.apply([write])[0]
        if isinstance(answer, JournalError):
            raise answer
        return answer

    def _apply_one(self, conn: sqlite3.Connection, change: _Change, now: float) -> int:
        """One move, after checking the state table; closes or opens the attempt it ends or starts."""
        key, state = change.key, change.state
        row = self._check_move(conn, key, state)
        where = (self.run, key)
        if state is State.RUNNING:
            attempt: int = row["attempts"] + 1
            conn.execute(
                "UPDATE attempts SET state = ? WHERE run = ? AND key = ? AND state = 'running'", (_INTERRUPTED, *where)
            )
            conn.execute(
                "UPDATE items SET state = 'running', attempts = ?, started = ?, finished = NULL,"
                " error = NULL, retryable = 0 WHERE run = ? AND key = ?",
                (attempt, now, *where),
            )
            conn.execute(
                "INSERT INTO attempts (run, key, attempt, state, started) VALUES (?, ?, ?, 'running', ?)",
                (*where, attempt, now),
            )
            return attempt
        conn.execute(
            "UPDATE items SET state = ?, finished = ?, error = ?, retryable = ?,"
            " result_kind = ?, result = ? WHERE run = ? AND key = ?",
            (state.value, now, change.error, int(change.retryable), *_columns(change.result), *where),
        )
        conn.execute(
            "UPDATE attempts SET state = ?, finished = ?, error = ? WHERE run = ? AND key = ? AND state = 'running'",
            (state.value, now, change.error, *where),
        )
        return 0

    def _check_move(self, conn: sqlite3.Connection, key: str, target: State) -> sqlite3.Row:
        """The item's row, after checking that it may move to ``target`` from where it is."""
        row = conn.execute(
            "SELECT state, attempts FROM items WHERE run = ? AND key = ?", (self.run, key)
        ).fetchone()
        if row is None:
            raise JournalError(f"no item with key {key!r} in run {self.run!r} of {self.path}")
        current = State(row["state"])
        if current not in _SOURCES[target]:
            raise JournalError(_bad_move(key, current, target))
        return row

    def _select_keys(self, conn: sqlite3.Connection, keys: list[str]) -> dict[str, Record]:
        found: dict[str, Record] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM items WHERE run = ? AND key IN ({marks})",
                (self.run, *chunk),
            )
            found.update((row["key"], _record(row)) for row in rows)
        return found

    def _select(
        self, where: str, params: tuple[Any, ...], *, limit: int = -1, offset: int = 0
    ) -> list[Record]:
        """Records of this run matching ``where``, in insertion order (limit -1: all)."""
        sql = (
            f"SELECT {_COLUMNS} FROM items WHERE run = ? AND {where} ORDER BY seq LIMIT ? OFFSET ?"
        )
        return [_record(row) for row in self._query(sql, (self.run, *params, limit, offset))]

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        with self._lock, _translated(self.path):
            return self._connection().execute(sql, params).fetchall()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. IMMEDIATE takes the file's write lock before the first
        read, so a state check and the update after it cannot interleave with another process.
        """
        with self._lock, _translated(self.path):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn


def format_counts(store: Journal) -> str:
    """One line for the CLI, e.g. ``run 'default': 10 items, 7 done, 1 failed, 2 queued``."""
    counts = store.counts()
    total = sum(counts.values())
    parts = [f"{n} {state.value}" for state, n in counts.items() if n]
    noun = "item" if total == 1 else "items"
    return ", ".join([f"run {store.run!r}: {total} {noun}", *parts])


# -- opening the file --------------------------------------------------------------------------


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open the file, switch it to WAL and make sure the tables exist and are ours."""
    if path != ":memory:" and not path.startswith("file:"):
        # Created owner-only (SQLite gives its -wal and -shm files the same mode): items and
        # results are the users' data.
        with _translated(path), contextlib.suppress(FileNotFoundError, PermissionError):
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(path, 0o600)
    # isolation_level=None: we issue BEGIN ourselves, so each method is exactly one transaction.
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    try:
        with _translated(path):
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            _create_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _create_schema(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise JournalError(
                f"{path} has journal schema {version}, newer than this parapipe's "
                f"({_SCHEMA_VERSION}); upgrade parapipe to read it"
            )
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


@contextmanager
def _translated(path: str) -> Iterator[None]:
    """Raise SQLite's errors (locked, not a database, disk full) as `JournalError`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise JournalError(f"journal {path}: {exc}") from exc


# -- rows and values ---------------------------------------------------------------------------


def _record(row: sqlite3.Row) -> Record:
    return Record(
        key=row["key"],
        run=row["run"],
        state=State(row["state"]),
        attempts=row["attempts"],
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        error=_loads_error(row["error"]),
        retryable=bool(row["retryable"]),
        _result=_blob(row["result_kind"], row["result"]),
        _payload=_blob(row["payload_kind"], row["payload"]),
    )


def _bad_move(key: str, current: State, target: State) -> str:
    allowed = ", ".join(sorted(s.value for s in _SOURCES[target]))
    text = f"cannot mark item {key!r} {target.value}: it is {current.value}"
    if current in (State.DONE, State.CANCELLED):
        return f"{text}, which is final (use a new key or run to process it again)"
    return f"{text}; only an item that is {allowed} can become {target.value}"


def _check_keys(keys: list[str]) -> None:
    """Refuse non-string and repeated keys: a repeat would silently get another item's result."""
    seen: set[str] = set()
    for key in keys:
        if not isinstance(key, str):
            raise JournalError(f"journal keys must be str, got {type(key).__name__}: {key!r}")
        if key in seen:
            raise JournalError(f"key {key!r} is given to more than one item; keys must be unique")
        seen.add(key)


def _payload_blobs(keys: list[str], payloads: Sequence[Any] | None) -> list[_Blob | None]:
    if payloads is None:
        return [None] * len(keys)
    if len(payloads) != len(keys):
        raise JournalError(f"got {len(payloads)} payloads for {len(keys)} keys")
    return [_encode(payload, None) for payload in payloads]


def _columns(blob: _Blob | None) -> tuple[str | None, str | bytes | None]:
    return (blob.kind, blob.data) if blob is not None else (None, None)


def _blob(kind: str | None, data: str | bytes | None) -> _Blob | None:
    return _Blob(kind, data) if kind is not None and data is not None else None


def _encode(value: Any, limit: int | None) -> _Blob | None:
    """JSON when the value comes back identical (readable by the CLI, the service and other
    languages), else a pickle; None when the encoding is over ``limit`` bytes.
    """
    blob = _json_blob(value, limit) or _pickle_blob(value)
    if limit is not None and len(blob.data) > limit:
        return None
    return blob


def _json_blob(value: Any, limit: int | None) -> _Blob | None:
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None
    # Too large: dropped by the caller anyway, so skip the walk over a big value.
    if (limit is not None and len(text) > limit) or _is_plain_json(value):
        return _Blob("json", text)
    return None


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _is_plain_json(value: Any) -> bool:
    """True when JSON gives the value back unchanged: no tuples (they come back as lists),
    no int dict keys (they come back as strings), no subclasses such as enums.
    """
    kind = type(value)
    if kind in _JSON_SCALARS:
        return True
    if kind is list:
        return all(_is_plain_json(item) for item in value)
    if kind is dict:
        return all(type(k) is str and _is_plain_json(v) for k, v in value.items())
    return False


def _pickle_blob(value: Any) -> _Blob:
    try:
        return _Blob("pickle", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
        raise JournalError(
            f"cannot store a {type(value).__name__}: it is neither plain JSON nor picklable"
        ) from exc


def _decode(blob: _Blob | None) -> Any:
    # The file is the user's own output, trusted like any pickle they wrote themselves.
    if blob is None:
        return None
    if blob.kind == "json" or isinstance(blob.data, str):
        return json.loads(blob.data)
    return pickle.loads(blob.data)


def _dumps_error(error: dict[str, Any] | None) -> str | None:
    # default=repr: recording a failure must never fail because of an odd field.
    return json.dumps(error, default=repr) if error is not None else None


def _loads_error(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text is not None else None
