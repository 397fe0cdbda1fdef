"""Errors of the HTTP service and its client, and how every failure becomes a status code.

The tree (all under `parapipe.ParapipeError`)::

    ServiceError              a request was refused; ``status`` is the HTTP status it maps to
     +-- BadRequest           400/413/415/422: the body is malformed, too large or of the wrong type
     +-- Unauthorized         401: no API key, or a wrong one
     +-- Forbidden            403: a browser page of another origin, or an unexpected Host header
     +-- JobNotFound          404: no job with that id in this service's journal
     +-- JobConflict          409: the job already finished, so it cannot be cancelled
     +-- JobCancelled         (client) the job whose result was asked for was cancelled
     +-- Overloaded           429: the admission queue is full; retry after ``retry_after`` s
     +-- NotReady             503: the engine is still loading its models (or failed to)
     +-- RequestTimeout       504: no result within the request timeout (also a TimeoutError)
     +-- ResultNotSerializable 500: the graph returned a value with no JSON form
     +-- Unreachable          (client) no HTTP answer at all: server down, wrong URL, network
    InsecureBind (ConfigError) serve() was asked to listen beyond loopback without an API key

Item failures keep their own types (`StageError`, `WorkerDied`, `TaskTimeout`) on both sides of
the wire: the server sends ``ItemError.to_dict()`` and the client raises ``ItemError.from_dict()``.
This module imports nothing outside the standard library, so the client can use it.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ConfigError, ItemError, ParapipeError, StageError, StageFailed, TaskTimeout, WorkerDied

__all__ = [
    "BadRequest",
    "Forbidden",
    "InsecureBind",
    "JobCancelled",
    "JobConflict",
    "JobNotFound",
    "NotReady",
    "Overloaded",
    "RequestTimeout",
    "ResultNotSerializable",
    "ServiceError",
    "Unauthorized",
    "Unreachable",
    "error_body",
    "error_from",
    "error_status",
    "public_error",
    "raise_for_error",
    "scrub_paths",
]

SERVICE_STAGE = "<service>"
"""The ``stage`` of errors raised by the service itself rather than inside a stage."""


class ServiceError(ParapipeError):
    """The service refused a request; ``status`` is the HTTP status, ``message`` says what to change."""

    status = 500

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of a response body, the same shape item errors have."""
        return {"type": type(self).__name__, "message": self.message, "stage": SERVICE_STAGE}


class BadRequest(ServiceError):
    """The request itself is wrong (400), too large (413), of the wrong media type (415) or invalid (422)."""

    status = 400


class Unauthorized(ServiceError):
    """A valid ``Authorization: Bearer <key>`` header is required."""

    status = 401


class Forbidden(ServiceError):
    """The request came from a web page of another origin, or named a host this server does not serve."""

    status = 403


class JobNotFound(ServiceError):
    """No job with that id exists in this service's journal."""

    status = 404


class JobConflict(ServiceError):
    """The job is already done, failed or cancelled."""

    status = 409


class JobCancelled(ServiceError):
    """Raised by the client's ``result()`` for a job that was cancelled before it finished."""

    status = 409


class Overloaded(ServiceError):
    """Too many requests are accepted and unfinished; nothing was queued, so retrying is safe."""

    status = 429


class NotReady(ServiceError):
    """The engine is not serving yet (its workers are loading models), or it failed to start."""

    status = 503


class RequestTimeout(ServiceError, TimeoutError):
    """The result did not arrive in time: a synchronous run past the server's request timeout (then
    cancelled), or a job still unfinished when the client's ``result(timeout=...)`` ran out."""

    status = 504


class ResultNotSerializable(ServiceError):
    """The graph's result has no JSON form; return dicts, lists, numbers, strings or numpy arrays."""

    status = 500


class Unreachable(ServiceError):
    """The client got no HTTP answer: the server is down or restarting, or the URL is wrong."""

    status = 0


class InsecureBind(ConfigError):
    """serve() refuses to listen on a non-loopback address without API keys unless told it is fine."""


_SERVICE_ERRORS: dict[str, type[ServiceError]] = {
    c.__name__: c
    for c in (
        ServiceError,
        BadRequest,
        Unauthorized,
        Forbidden,
        JobNotFound,
        JobConflict,
        JobCancelled,
        Overloaded,
        NotReady,
        RequestTimeout,
        ResultNotSerializable,
    )
}

_ITEM_STATUS: dict[type[ItemError], int] = {StageError: 422, TaskTimeout: 504, WorkerDied: 500, StageFailed: 503}
"""A StageError is the item's fault (a broken file, bad input); a timeout is a gateway timeout; a
worker that died on the item (after its retries) is a server error; a stage that is down makes
the service unavailable."""


def error_status(exc: BaseException) -> int:
    """The HTTP status for any error the service can meet while serving a request."""
    if isinstance(exc, ServiceError):
        return exc.status
    if isinstance(exc, ItemError):
        return next((s for t, s in _ITEM_STATUS.items() if isinstance(exc, t)), 500)
    return 500


def error_body(exc: BaseException) -> dict[str, Any]:
    """The JSON ``error`` object for an exception; never a traceback, which stays in the server log."""
    if isinstance(exc, (ServiceError, ItemError)):
        return public_error(exc.to_dict())
    return {"type": type(exc).__name__, "message": scrub_paths(str(exc)) or type(exc).__name__, "stage": SERVICE_STAGE}


def error_from(status: int, error: dict[str, Any], retry_after: float | None = None) -> ParapipeError:
    """The exception a response's ``error`` object describes (the client raises it)."""
    kind = str(error.get("type", ""))
    message = str(error.get("message", "")) or f"HTTP {status}"
    if kind in _SERVICE_ERRORS:
        return _SERVICE_ERRORS[kind](message, status=status, retry_after=retry_after)
    if kind and error.get("stage") not in (None, SERVICE_STAGE):
        return ItemError.from_dict({**error, "message": message})
    return ServiceError(f"{kind or 'error'}: {message}", status=status, retry_after=retry_after)


def public_error(error: dict[str, Any]) -> dict[str, Any]:
    """An error record as clients see it: no traceback (server internals), no engine index, and
    no server file paths in its message (a path keeps only its last part)."""
    shown = {k: v for k, v in error.items() if k not in ("traceback", "index")}
    if isinstance(shown.get("message"), str):
        shown["message"] = scrub_paths(shown["message"])
    return shown


_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s/'\"<>:,()\[\]]+)+/([^\s/'\"<>:,()\[\]]+)")


def scrub_paths(text: str) -> str:
    """``text`` with each absolute path cut to its base name: a client learns nothing of the
    server's file system from an error."""
    return _PATH.sub(r"\1", text)


def raise_for_error(status: int, error: dict[str, Any], retry_after: float | None = None) -> None:
    """Raise `error_from` of the arguments."""
    raise error_from(status, error, retry_after)
