"""Every error parapipe raises, rooted at one class so callers can catch them all.

The tree::

    ParapipeError
     +-- ConfigError          a stage, graph or engine option is wrong (raised before work starts)
     |    +-- GraphError      the composition of stages is invalid
     +-- EngineClosed         submit/map after close()
     +-- WorkerStartupError   a worker could not start or its setup() raised
     +-- JournalError         the job journal refused an operation or its file is unusable
     +-- TransportError       a shared-memory message cannot be decoded (segment gone or corrupt)
     +-- BatchSizeMismatch    process_batch returned the wrong number of results (raised in the
     |                        worker; callers see it as a StageError whose exc_type names it)
     +-- ItemError            one item failed; carries stage, index and key. Errors are data:
          |                   each one turns into JSON with to_dict() and back with from_dict()
          +-- StageError      user code raised inside a stage (remote traceback as __cause__)
          +-- WorkerDied      the worker holding the item died (signal / exit code)
          +-- TaskTimeout     the item ran past the stage's timeout and its worker was replaced
          +-- StageFailed     the stage cannot keep any worker alive; it is down
          +-- ResultLost      the item's result could not be read back (its segment was gone)

Everything an item's future can raise is an `ItemError`, so ``map(return_exceptions=True)``
yields every failure in its item's place, and an `ItemError` never takes the engine down: the
engine keeps serving other items.
"""

from __future__ import annotations

import signal
from typing import Any

__all__ = [
    "BatchSizeMismatch",
    "ConfigError",
    "EngineClosed",
    "GraphError",
    "ItemError",
    "JournalError",
    "ParapipeError",
    "ResultLost",
    "StageError",
    "StageFailed",
    "TaskTimeout",
    "TransportError",
    "WorkerDied",
    "WorkerStartupError",
]


class ParapipeError(Exception):
    """Root of every parapipe error."""


class ConfigError(ParapipeError, ValueError):
    """An option is invalid; the message names the option and what to change."""


class GraphError(ConfigError):
    """The graph of stages is invalid (empty pipeline, duplicate branch, not a stage)."""


class EngineClosed(ParapipeError, RuntimeError):
    """The engine was closed; create a new one (or use it inside ``with``)."""


class WorkerStartupError(ParapipeError, RuntimeError):
    """A worker process failed to start: its import, budget or ``setup()`` failed or timed out."""


class JournalError(ParapipeError):
    """The journal refused an operation: a bad state change, an unknown key, an unusable file."""


class TransportError(ParapipeError):
    """A message cannot be decoded: its segment is gone, truncated, or the header is corrupt."""


class BatchSizeMismatch(ParapipeError):
    """``process_batch`` returned a different number of results than it got items.

    Results are matched to items by position, so a wrong count would hand some callers
    another item's result; the whole batch fails instead.
    """

    def __init__(self, stage: str, expected: int, returned: int | None, kind: str = "list") -> None:
        self.stage = stage
        self.expected = expected
        self.returned = returned
        self.kind = kind
        what = _plural(returned, "result") if returned is not None else f"a value of type {kind}"
        super().__init__(
            f"stage {stage!r}: process_batch returned {what} for a batch of "
            f"{_plural(expected, 'item')}; return exactly one result per item, in order"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.stage, self.expected, self.returned, self.kind))


class ItemError(ParapipeError):
    """One item failed. Raised by ``Future.result()`` or yielded by ``map(return_exceptions=True)``.

    Attributes:
        stage: name of the stage where the item failed.
        index: position of the item in its ``map`` call, or the submit sequence number.
        key: the item's journal key when one was given, else None.
        message: human readable detail.
    """

    def __init__(
        self,
        stage: str,
        message: str,
        *,
        index: int | None = None,
        key: str | None = None,
    ) -> None:
        self.stage = stage
        self.message = message
        self.index = index
        self.key = key
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"stage {self.stage!r}"
        if self.index is not None:
            where += f", item {self.index}"
        if self.key is not None:
            where += f" (key {self.key!r})"
        return f"{where}: {self._detail()}"

    def _detail(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self._text()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._text()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, for output files and the HTTP API."""
        return {
            "type": type(self).__name__,
            "stage": self.stage,
            "message": self.message,
            "index": self.index,
            "key": self.key,
            **self._extra(),
        }

    def _extra(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> ItemError:
        return cls(d["stage"], d["message"], index=d.get("index"), key=d.get("key"))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ItemError:
        """Rebuild an error written by `to_dict` (the type is looked up by name)."""
        cls = _ITEM_ERRORS.get(d.get("type", ""), ItemError)
        return cls._from_fields(d)


class StageError(ItemError):
    """User code raised inside a stage.

    Attributes:
        exc_type: qualified name of the original exception type (e.g. ``ValueError``).
        traceback: the formatted traceback from inside the worker.
    """

    def __init__(
        self,
        stage: str,
        message: str,
        *,
        exc_type: str = "Exception",
        traceback: str = "",
        index: int | None = None,
        key: str | None = None,
    ) -> None:
        self.exc_type = exc_type
        self.traceback = traceback
        super().__init__(stage, message, index=index, key=key)
        if traceback:
            self.__cause__ = _RemoteTraceback(traceback)

    def _detail(self) -> str:
        return f"{self.exc_type}: {self.message}"

    def _extra(self) -> dict[str, Any]:
        return {"exc_type": self.exc_type, "traceback": self.traceback}

    @classmethod
    def from_exc_info(cls, stage: str, info: Any, index: int | None = None, key: str | None = None) -> StageError:
        """The error of an item whose stage raised, from the worker's captured ``ExcInfo``
        (anything with ``type``, ``message`` and ``traceback``)."""
        return cls(stage, info.message, exc_type=info.type, traceback=info.traceback, index=index, key=key)

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> ItemError:
        return cls(
            d["stage"],
            d["message"],
            exc_type=d.get("exc_type", "Exception"),
            traceback=d.get("traceback", ""),
            index=d.get("index"),
            key=d.get("key"),
        )


class WorkerDied(ItemError):
    """The worker process holding the item died.

    Attributes:
        exitcode: the process exit code; negative means killed by that signal number.
        attempts: how many times the item was tried before giving up.
    """

    def __init__(
        self,
        stage: str,
        message: str = "",
        *,
        exitcode: int | None = None,
        attempts: int = 1,
        index: int | None = None,
        key: str | None = None,
    ) -> None:
        self.exitcode = exitcode
        self.attempts = attempts
        if not message:
            message = describe_exit(exitcode)
        super().__init__(stage, message, index=index, key=key)

    def _extra(self) -> dict[str, Any]:
        return {"exitcode": self.exitcode, "attempts": self.attempts}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> ItemError:
        return cls(
            d["stage"],
            d["message"],
            exitcode=d.get("exitcode"),
            attempts=d.get("attempts", 1),
            index=d.get("index"),
            key=d.get("key"),
        )


class TaskTimeout(ItemError):
    """The item ran longer than the stage's ``timeout``; its worker was killed and replaced."""

    def __init__(
        self,
        stage: str,
        message: str = "",
        *,
        timeout: float | None = None,
        attempts: int = 1,
        index: int | None = None,
        key: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.attempts = attempts
        super().__init__(stage, message or f"ran past the timeout of {timeout} s", index=index, key=key)

    def _extra(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "attempts": self.attempts}

    @classmethod
    def _from_fields(cls, d: dict[str, Any]) -> ItemError:
        return cls(
            d["stage"],
            d["message"],
            timeout=d.get("timeout"),
            attempts=d.get("attempts", 1),
            index=d.get("index"),
            key=d.get("key"),
        )


class StageFailed(ItemError, RuntimeError):
    """The stage could not keep workers alive (its setup keeps crashing); it serves nothing more.

    An `ItemError` because it reaches the futures of the items the stage can no longer serve;
    ``except StageFailed`` tells a stage that is down from one item's failure.
    """

    def __init__(self, stage: str, message: str, *, index: int | None = None, key: str | None = None) -> None:
        super().__init__(stage, message, index=index, key=key)

    def _text(self) -> str:
        item = [f"item {self.index}"] if self.index is not None else []
        item += [f"key {self.key!r}"] if self.key is not None else []
        return f"stage {self.stage!r} failed: {self.message}" + (f" ({', '.join(item)})" if item else "")


class ResultLost(ItemError):
    """The item's result could not be read back: its shared-memory segment was gone or corrupt.

    Nothing names the stage that produced the result by then, so ``stage`` is `TRANSPORT_STAGE`.
    """

    def __init__(self, stage: str = "", message: str = "", *, index: int | None = None, key: str | None = None) -> None:
        super().__init__(stage or TRANSPORT_STAGE, message, index=index, key=key)

    def _detail(self) -> str:
        return f"its result was lost in transport: {self.message}"


TRANSPORT_STAGE = "<transport>"
"""The ``stage`` of a `ResultLost`: the failure happened between stages, not inside one."""


class _RemoteTraceback(Exception):
    """The worker's traceback, set as a `StageError`'s ``__cause__`` so an uncaught error
    prints where it happened in the worker, as `concurrent.futures` does for its processes."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


def describe_exit(exitcode: int | None) -> str:
    """Say why a worker ended, with the likely cause, from its exit code."""
    if exitcode is None:
        return "worker died (exit code unknown)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = ""
        if -exitcode == signal.SIGKILL:
            hint = " (killed from outside: often the kernel's OOM killer or a memory limit)"
        elif -exitcode == signal.SIGSEGV:
            hint = " (segmentation fault in native code)"
        return f"worker was killed by {name}{hint}"
    return f"worker exited with code {exitcode}"


def _rebuild(cls: type[ItemError], d: dict[str, Any]) -> ItemError:
    return cls._from_fields(d)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


_ITEM_ERRORS: dict[str, type[ItemError]] = {
    c.__name__: c for c in (ItemError, StageError, WorkerDied, TaskTimeout, StageFailed, ResultLost)
}
