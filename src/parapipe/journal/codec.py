"""The journal's values and rules, the same for every backend: states and the moves between
them, records, writes, and how results, payloads and errors are stored.

Stored values are JSON when JSON gives them back unchanged (readable by the CLI, the service,
SQL and other languages), else a pickle. The file is the user's own output, trusted like any
pickle they wrote themselves.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, NamedTuple

from ..errors import ItemError, JournalError

__all__ = ["DEFAULT_MAX_RESULT_BYTES", "INTERRUPTED", "Record", "State", "ValueNotStorable", "Write"]

# A result larger than this is not kept (the item still counts as done): a journal full of
# model outputs would grow without bound and make every page of the CLI slow to read. The
# journals ``map`` opens itself keep every result (``max_result_bytes=None``): there the
# journal is the only place a done item's result can come back from on resume.
DEFAULT_MAX_RESULT_BYTES = 1 << 20

INTERRUPTED = "interrupted"
"""The attempt log's state for an attempt whose process died (or gave its lease back) before
it reported an outcome."""


class State(str, Enum):
    """Where an item is in its life; the values are what the database and the HTTP API show."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


_STATES = {state.value: state for state in State}
"""``State(text)`` without the enum's lookup machinery: a resume builds a record per item."""

SOURCES: dict[State, frozenset[State]] = {
    State.RUNNING: frozenset({State.QUEUED, State.RUNNING, State.FAILED}),
    State.DONE: frozenset({State.RUNNING}),
    State.FAILED: frozenset({State.QUEUED, State.RUNNING}),
    State.CANCELLED: frozenset({State.QUEUED, State.RUNNING}),
}
"""For each target state, the states an item may come from (the table in the package docstring)."""


class Blob(NamedTuple):
    """A stored value: ``("json", text)`` when it round-trips through JSON, else a pickle."""

    kind: str
    data: str | bytes


@dataclass(frozen=True)
class Record:
    """One item as the journal last saw it.

    ``result`` and ``payload`` are decoded on first access, so listing jobs (the CLI, the
    service's pages) never unpickles objects whose classes the reader may not even import.
    ``owner`` and ``lease_until`` name the runner holding a running item and until when its
    lease lasts (epoch seconds); both are None once no one holds it.
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
    owner: str | None = None
    lease_until: float | None = None
    _result: Blob | None = field(default=None, repr=False)
    _payload: Blob | None = field(default=None, repr=False)

    @property
    def result_stored(self) -> bool:
        """False for a done item whose result was over ``max_result_bytes``."""
        return self._result is not None

    @cached_property
    def result(self) -> Any:
        """The value given to `Journal.mark_done`, or None when none was stored."""
        return decode(self._result)

    @cached_property
    def payload(self) -> Any:
        """The item itself, when `Journal.add` was given payloads (else None)."""
        return decode(self._payload)

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


class Change(NamedTuple):
    """A `Write` ready for SQL: values encoded, the error as its JSON text."""

    key: str
    state: State
    result: Blob | None
    error: str | None
    retryable: bool


COLUMNS = (
    "key, run, state, attempts, retryable, created, started, finished, error, owner, lease_until,"
    " result_kind, result, payload_kind, payload"
)
"""What `record` reads, in its order. Blobs last: SQLite walks a large value's overflow pages to
reach the columns after it."""


def record(row: Sequence[Any]) -> Record:
    """A `Record` from a row of `COLUMNS`."""
    key, run, state, attempts, retryable, created, started, finished, error, owner, lease = row[:11]
    return Record(
        key=key,
        run=run,
        state=_STATES[state],
        attempts=attempts,
        created=created,
        started=started,
        finished=finished,
        error=loads_error(error),
        retryable=bool(retryable),
        owner=owner,
        lease_until=lease,
        _result=blob(row[11], row[12]),
        _payload=blob(row[13], row[14]),
    )


def prepare(write: Write, max_result_bytes: int | None) -> Change | JournalError:
    """The write with its values encoded; a value that cannot be stored refuses it."""
    state = State(write.state)
    try:
        result = encode(write.result, max_result_bytes) if state is State.DONE else None
    except JournalError as exc:
        return exc
    error = write.error.to_dict() if isinstance(write.error, ItemError) else write.error
    text = dumps_error(dict(error) if error is not None else None)
    return Change(write.key, state, result, text, write.retryable)


def bad_move(key: str, current: State, target: State) -> str:
    allowed = ", ".join(sorted(s.value for s in SOURCES[target]))
    text = f"cannot mark item {key!r} {target.value}: it is {current.value}"
    if current in (State.DONE, State.CANCELLED):
        return f"{text}, which is final (use a new key or run to process it again)"
    return f"{text}; only an item that is {allowed} can become {target.value}"


def check_keys(keys: list[str]) -> None:
    """Refuse non-string and repeated keys: a repeat would silently get another item's result."""
    if len(set(keys)) == len(keys) and all(type(key) is str for key in keys):
        return
    seen: set[str] = set()
    for key in keys:
        if not isinstance(key, str):
            raise JournalError(f"journal keys must be str, got {type(key).__name__}: {key!r}")
        if key in seen:
            raise JournalError(f"key {key!r} is given to more than one item; keys must be unique")
        seen.add(key)


def payload_blobs(keys: list[str], payloads: Sequence[Any] | None) -> list[Blob | None]:
    if payloads is None:
        return [None] * len(keys)
    if len(payloads) != len(keys):
        raise JournalError(f"got {len(payloads)} payloads for {len(keys)} keys")
    return [encode(payload, None) for payload in payloads]


def columns(value: Blob | None) -> tuple[str | None, str | bytes | None]:
    return (value.kind, value.data) if value is not None else (None, None)


def blob(kind: str | None, data: str | bytes | None) -> Blob | None:
    return Blob(kind, data) if kind is not None and data is not None else None


def encode(value: Any, limit: int | None) -> Blob | None:
    """JSON when the value comes back identical, else a pickle; None when the encoding is over
    ``limit`` bytes."""
    kind = type(value)
    if kind is int or kind is str or value is None:  # the common cheap results, without a walk
        encoded = Blob("json", json.dumps(value))
    else:
        encoded = _json_blob(value, limit) or _pickle_blob(value)
    if limit is not None and len(encoded.data) > limit:
        return None
    return encoded


def _json_blob(value: Any, limit: int | None) -> Blob | None:
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None
    # Too large: dropped by the caller anyway, so skip the walk over a big value.
    if (limit is not None and len(text) > limit) or _is_plain_json(value):
        return Blob("json", text)
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


class ValueNotStorable(JournalError):
    """A write refused for its value (neither plain JSON nor picklable, or nested too deep),
    not for the move it asked: the driver fails such an item rather than leave it running."""


def _pickle_blob(value: Any) -> Blob:
    try:
        return Blob("pickle", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
        raise ValueNotStorable(
            f"cannot store a {type(value).__name__}: it is neither plain JSON nor picklable"
        ) from exc


def decode(value: Blob | None) -> Any:
    if value is None:
        return None
    if value.kind == "json":
        return json.loads(value.data)
    assert isinstance(value.data, bytes)
    return pickle.loads(value.data)


def dumps_error(error: dict[str, Any] | None) -> str | None:
    # default=repr: recording a failure must never fail because of an odd field.
    return json.dumps(error, default=repr) if error is not None else None


def loads_error(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text is not None else None
