"""Messages that cross the process boundary between the parent and a worker.

Every message is one pickled tuple sent with ``Connection.send_bytes``; the first field is its
kind. Tasks travel in chunks so cheap stages pay one syscall per chunk, not per item.

    parent -> worker   (TASKS, [(task_id, item), ...]) | (BATCH, [(task_id, item), ...]) | (STOP,)
    worker -> parent   (READY, info) | (FAILED, ExcInfo) | (RESULTS, [Result, ...], unmapped) | (LOG, dict)

``unmapped`` names the shared-memory segments the worker stopped mapping since its last
RESULTS: the parent may overwrite those it created (`transport.SegmentArena.recycle`).
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass
from typing import Any

TASKS = 1
STOP = 2
READY = 3
FAILED = 4
RESULTS = 5
LOG = 6
BATCH = 7

PROTOCOL = pickle.HIGHEST_PROTOCOL

PIPE_MESSAGE_LIMIT = 32 * 1024
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
    def capture(cls, exc: BaseException, retry_on: tuple[type[BaseException], ...] = ()) -> ExcInfo:
        kind = type(exc)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        text = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
        return cls(name, str(exc), text, isinstance(exc, retry_on) if retry_on else False)


class Chunk(list):  # type: ignore[type-arg]
    """Many items travelling as one task, so cheap stages pay per chunk, not per item.

    ``map`` uses it when every stage is cheap. A stage handles each element on its own and
    returns a `ChunkResult`; one element's error never fails its neighbours.
    """


class ChunkResult:
    """Per element of a `Chunk`: its value, or, at the same index in ``errors``, why it failed.

    Values stay a plain list (pickled at C speed, yielded as they are); failures, rare, sit
    apart as ``{index: (stage, ExcInfo)}`` and their slots in ``values`` hold None.
    """

    __slots__ = ("errors", "values")

    def __init__(self, values: list[Any], errors: dict[int, tuple[str, ExcInfo]] | None = None) -> None:
        self.values = values
        self.errors = errors or {}

    def __len__(self) -> int:
        return len(self.values)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChunkResult, (self.values, self.errors))


def run_chunk(process: Any, stage: str, chunk: Chunk | ChunkResult) -> ChunkResult:
    """Apply ``process`` to each live element; elements that failed upstream pass through."""
    if isinstance(chunk, ChunkResult):
        items, errors = chunk.values, dict(chunk.errors)
    else:
        items, errors = chunk, {}
    if not errors:
        return _run_all(process, stage, items)
    values: list[Any] = []
    append = values.append
    for i, item in enumerate(items):
        if i in errors:
            append(None)
            continue
        try:
            append(process(item))
        except Exception as exc:  # user errors are data, per element
            append(None)
            errors[i] = (stage, ExcInfo.capture(exc))
    return ChunkResult(values, errors)


def _run_all(process: Any, stage: str, items: list[Any]) -> ChunkResult:
    """`run_chunk` when no element failed upstream: one ``try`` around the whole loop (a third
    of the cost of one per element), resumed after the element that raised."""
    values: list[Any] = []
    append = values.append
    errors: dict[int, tuple[str, ExcInfo]] = {}
    rest = items
    while True:
        try:
            for item in rest:
                append(process(item))
            return ChunkResult(values, errors)
        except Exception as exc:  # user errors are data, per element
            errors[len(values)] = (stage, ExcInfo.capture(exc))
            append(None)
            rest = items[len(values) :]


# A result row: (task_id, ok, value-or-ExcInfo, started, finished, cpu_seconds).
# started/finished are time.monotonic() readings, comparable across processes on Linux.
Result = tuple[int, bool, Any, float, float, float]


def dumps(msg: tuple[Any, ...]) -> bytes:
    return pickle.dumps(msg, PROTOCOL)


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def dump_results(results: list[Result], encode: Any = dumps, unmapped: list[str] | None = None) -> bytes:
    """Encode results; a value that cannot be pickled fails its own item, not the whole chunk."""
    try:
        return encode((RESULTS, results, unmapped or []))
    except Exception:  # any pickling failure is reported per item below
        return encode((RESULTS, [_picklable(r) for r in results], unmapped or []))


def unsendable(value: Any, exc: Exception) -> ExcInfo:
    """The error of an item whose result cannot be pickled: the result's fault, not the stage's."""
    return ExcInfo(
        "ResultNotPicklable", f"result of type {type(value).__name__} cannot be sent back to the parent: {exc}", ""
    )


def _picklable(row: Result) -> Result:
    tid, _, value, t0, t1, cpu = row
    try:
        pickle.dumps(value, PROTOCOL)
    except Exception as exc:
        return (tid, False, unsendable(value, exc), t0, t1, cpu)
    return row
