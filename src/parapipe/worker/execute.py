"""Running the user's code on what arrived in one message: one item, a batch, or a map `Chunk`.

This is the only place a worker calls ``process``/``process_batch``. User exceptions become
data here (an `ExcInfo`, or an `ItemError` per chunk element), so nothing the stage raises can
end the serve loop in `child`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import transport
from ..batching import check_batch_result
from ..errors import ItemError, StageError
from .protocol import Chunk, ChunkResult, ExcInfo, Result, unsendable

Errors = tuple[type[BaseException], ...]
Pack = Callable[[Any], Any]


def run_one(stage: Any, tid: int, item: Any, retry_on: Errors, pack: Pack) -> Result:
    """Large results leave `pack`ed, so the parent can pass them on without reading them."""
    c0, t0 = time.process_time(), time.monotonic()
    value: Any
    try:
        if isinstance(item, (Chunk, ChunkResult)):
            value, ok = run_chunk(stage.process, stage.stage_name, item), True
        else:
            ok, value = _packed(pack, stage.process(transport.unpacked(item)))
    except Exception as exc:  # user errors are data for the parent
        value, ok = ExcInfo.capture(exc, retry_on), False
    return (tid, ok, value, t0, time.monotonic(), time.process_time() - c0)


def _packed(pack: Pack, value: Any) -> tuple[bool, Any]:
    """(True, the value ready to send), or (False, why it cannot be sent)."""
    try:
        return True, pack(value)
    except Exception as exc:  # the result cannot be pickled: this item's error
        return False, unsendable(value, exc)


def run_batch(stage: Any, rows: list[tuple[int, Any]], retry_on: Errors, pack: Pack) -> list[Result]:
    """One ``process_batch`` call for the whole batch; on failure every item gets the error,
    or, with ``batch_fallback``, each item is retried alone so only the bad one fails."""
    c0, t0 = time.process_time(), time.monotonic()
    try:
        items = [transport.unpacked(item) for _, item in rows]
        values = check_batch_result(stage.process_batch(items), len(rows), stage.stage_name)
        outcomes = [_packed(pack, v) for v in values]
    except Exception as exc:  # user errors are data for the parent
        if stage.batch_fallback and len(rows) > 1:
            return [r for row in rows for r in run_batch(stage, [row], retry_on, pack)]
        outcomes = [(False, ExcInfo.capture(exc, retry_on))] * len(rows)
    share, cpu = (time.monotonic() - t0) / len(rows), (time.process_time() - c0) / len(rows)
    return [(tid, ok, v, t0, t0 + share, cpu) for (tid, _), (ok, v) in zip(rows, outcomes, strict=True)]


def run_chunk(process: Callable[[Any], Any], stage: str, chunk: Chunk | ChunkResult) -> ChunkResult:
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
            errors[i] = _element_error(stage, exc)
    return ChunkResult(values, errors)


def _run_all(process: Callable[[Any], Any], stage: str, items: list[Any]) -> ChunkResult:
    """`run_chunk` when no element failed upstream: the loop runs in C (``list.extend`` over
    ``map``: half the cost of a Python loop with ``append``, ~2x for a no-op stage), and as
    ``extend`` keeps what it appended before an element raised, it resumes after that element."""
    values: list[Any] = []
    errors: dict[int, ItemError] = {}
    rest = items
    while True:
        try:
            values.extend(map(process, rest))
            return ChunkResult(values, errors)
        except Exception as exc:  # user errors are data, per element
            errors[len(values)] = _element_error(stage, exc)
            values.append(None)
            rest = items[len(values) :]


def _element_error(stage: str, exc: Exception) -> ItemError:
    return StageError.from_exc_info(stage, ExcInfo.capture(exc))
