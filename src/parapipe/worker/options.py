"""What a stage's options make of its pool: how its queue is dispatched, who times its items,
and which interpreter its workers start on. Decided once, at pool creation, here rather than in
the pool's constructor, so the pool stays the wiring and this stays the rules."""

from __future__ import annotations

import os
from multiprocessing.context import BaseContext
from typing import Any

from ..batching import BatchQueue
from ..config import parse_rate
from ..stage import Stage
from .dispatch import MAX_MSGS, Dispatcher, Task
from .interp import InterpreterContext, probe, resolve_python
from .ratelimit import RateLimit


def is_concurrent(stage: Stage) -> bool:
    """Its workers run several messages at once, answering each when it finishes."""
    return stage.concurrency > 1 or stage.is_async


def parent_times_items(stage: Stage) -> bool:
    """The parent kills a worker whose item runs past ``timeout``; a concurrent worker cannot be
    killed for one of its items, so it times (and cancels or abandons) them itself."""
    return bool(stage.timeout) and not is_concurrent(stage)


def dispatcher_for(stage: Stage, batcher: BatchQueue[Task] | None) -> Dispatcher:
    """A deadline must time one item, not its wait in the pipe or its neighbours: a timed
    serial stage gets one message at a time and no packing. A concurrent one gets
    ``concurrency`` messages of one task each (each is answered on its own)."""
    timed = bool(stage.timeout)
    rate = RateLimit(parse_rate(stage.rate_limit)) if stage.rate_limit is not None else None
    if is_concurrent(stage):
        return Dispatcher(max_msgs=stage.concurrency, packing=False, batcher=batcher, concurrent=True, rate=rate)
    return Dispatcher(
        max_msgs=1 if timed else MAX_MSGS, packing=not (timed or stage.batched), batcher=batcher, rate=rate
    )


class WorkerInterpreter:
    """The interpreter of a stage's workers: the engine's start method, or the stage's own
    ``python=``, probed once, when the pool starts (see `interp.probe`)."""

    def __init__(self, python: str | os.PathLike[str] | None, stage: str, mp_context: BaseContext) -> None:
        self.python = None if python is None else str(python)
        """The interpreter's path once `context` resolved it; the option as given before."""
        self._stage = stage
        self._ctx: BaseContext = mp_context

    def context(self) -> BaseContext:
        """The context to start a worker with; raises `ConfigError` when ``python=`` names no
        interpreter, `WorkerStartupError` when it cannot run parapipe's worker."""
        if self.python is not None and not isinstance(self._ctx, InterpreterContext):
            self.python = resolve_python(self.python, self._stage)
            self._ctx = InterpreterContext(probe(self.python, self._stage))
        return self._ctx

    def describe(self) -> dict[str, Any]:
        return {"python": self.python} if self.python is not None else {}
