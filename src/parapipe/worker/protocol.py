"""Messages that cross the process boundary between the parent and a worker.

Every message is one pickled tuple sent with ``Connection.send_bytes``; the first field is its
kind. Several tasks may be packed into one message, so cheap stages pay one syscall per
message, not per item (a map `Chunk` is something else: many items as ONE task).

    parent -> worker   (TASKS, [(task_id, item), ...]) | (BATCH, [(task_id, item), ...]) | (STOP,)
    worker -> parent   (READY, info) | (FAILED, ExcInfo) | (RESULTS, [Result, ...], unmapped) | (LOG, dict)
                       | (UNREADABLE, ExcInfo): the oldest task message could not be unpickled

``unmapped`` names the shared-memory segments the worker stopped mapping since its last
RESULTS: the parent may overwrite those it created (`transport.SegmentArena.recycle`).
"""

from __future__ import annotations

import builtins
import pickle
import traceback
from dataclasses import dataclass
from typing import Any

from .. import transport
from ..errors import ItemError, StageError

TASKS = 1
STOP = 2
READY = 3
FAILED = 4
RESULTS = 5
LOG = 6
BATCH = 7
UNREADABLE = 8

PROTOCOL = pickle.HIGHEST_PROTOCOL

VERSION = 1
"""Version of this message protocol. A worker on another interpreter (``python=``) runs that
environment's parapipe: the parent checks it speaks this version before it starts any worker
there (`interp.probe`), because a mismatch would show only as undecodable messages."""

TIMED_OUT = "parapipe.TaskTimeout"
"""`ExcInfo.type` of an item that a concurrent worker gave up on at the stage's timeout (it
cannot be killed for one item): the parent makes it a `TaskTimeout`, as for a killed worker."""

PIPE_MESSAGE_LIMIT = transport.PIPE_MESSAGE_LIMIT
"""Largest message written to a worker's socket; anything bigger goes through shared memory.

This is what rules out a deadlock: a reader thread may send the next task to its worker while
that worker is sending a result back. If both messages were larger than the socket buffers
(~200 kB), each side would block in send() waiting for the other to read. With every message
under 32 KiB and at most two task messages in flight per worker, a worker's inbound buffer never
fills, so the reader's send always completes."""

RECYCLE_EXIT = 75
"""Exit code of a worker that retired on purpose (max_items_per_worker, max_memory between items)."""
MEMORY_EXIT = 76
"""Exit code of a worker that passed max_memory in the middle of an item."""


@dataclass(frozen=True)
class ExcInfo:
    """A user exception reduced to text, so any exception (even an unpicklable one) gets home."""

    type: str
    message: str
    traceback: str
    retryable: bool = False
    """The stage listed this exception type in ``retry_on``."""

    @classmethod
    def capture(cls, exc: BaseException, retry_on: tuple[builtins.type[BaseException], ...] = ()) -> ExcInfo:
        kind = type(exc)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        text = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
        return cls(name, str(exc), text, isinstance(exc, retry_on) if retry_on else False)


class Chunk(list[Any]):
    """Many items travelling as one task, so cheap stages pay per chunk, not per item.

    ``map`` uses it when every stage is cheap. A stage handles each element on its own and
    returns a `ChunkResult`; one element's error never fails its neighbours.
    """


class ChunkResult:
    """Per element of a `Chunk`: its value, or, at the same index in ``errors``, why it failed.

    Values stay a plain list (pickled at C speed, yielded as they are); failures, rare, sit
    apart as ``{index: ItemError}`` and their slots in ``values`` hold None. Each error names
    the stage that failed the element; its ``index`` is left None, because only ``map`` knows
    where the chunk started.
    """

    __slots__ = ("errors", "values")

    def __init__(self, values: list[Any], errors: dict[int, ItemError] | None = None) -> None:
        self.values = values
        self.errors = errors or {}

    def __len__(self) -> int:
        return len(self.values)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChunkResult, (self.values, self.errors))


def timed_out(timeout: float | None, how: str) -> ExcInfo:
    return ExcInfo(TIMED_OUT, f"ran past the timeout of {timeout} s and was {how}", "")


# A result row: (task_id, ok, value-or-ExcInfo, started, finished, cpu_seconds).
# started/finished are time.monotonic() readings, comparable across processes on Linux.
Result = tuple[int, bool, Any, float, float, float]


def dumps(msg: tuple[Any, ...]) -> bytes:
    return pickle.dumps(msg, PROTOCOL)


def dump_results(
    results: list[Result], encode: Any = dumps, unmapped: list[str] | None = None, stage: str = ""
) -> bytes:
    """Encode results; a value that cannot be pickled fails its own item, not the whole message
    (nor, in a map's chunk, the chunk: only that element; ``stage`` names it in that error)."""
    try:
        return encode((RESULTS, results, unmapped or []))
    except Exception:  # any pickling failure is reported per item below
        rows = [_picklable(r, stage) for r in results]
    try:
        return encode((RESULTS, rows, unmapped or []))
    except Exception as exc:  # each pickles alone, not together (recursion depth): fail them all
        return encode((RESULTS, [(r[0], False, unsendable(r[2], exc), *r[3:]) for r in rows], unmapped or []))


def unsendable(value: Any, exc: Exception) -> ExcInfo:
    """The error of an item whose result cannot be pickled: the result's fault, not the stage's."""
    return ExcInfo(
        "ResultNotPicklable", f"result of type {type(value).__name__} cannot be sent back to the parent: {exc}", ""
    )


def _picklable(row: Result, stage: str) -> Result:
    tid, ok, value, t0, t1, cpu = row
    if ok and type(value) is ChunkResult:
        return (tid, True, _picklable_elements(value, stage), t0, t1, cpu)
    try:
        pickle.dumps(value, PROTOCOL)
    except Exception as exc:
        return (tid, False, unsendable(value, exc), t0, t1, cpu)
    return row


def _picklable_elements(chunk: ChunkResult, stage: str) -> ChunkResult:
    values, errors = list(chunk.values), dict(chunk.errors)
    for i, value in enumerate(values):
        try:
            pickle.dumps(value, PROTOCOL)
        except Exception as exc:
            info = unsendable(value, exc)
            values[i], errors[i] = None, StageError(stage, info.message, exc_type=info.type)
    return ChunkResult(values, errors)
