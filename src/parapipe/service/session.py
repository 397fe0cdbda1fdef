"""What every ``WS /v1/stream`` session shares, whichever adapter runs it.

The handshake (`accept`: the API key, then an engine that can take items), the reply for one
item (`outcome`), the sender that keeps replies in the order the items came (`send_in_order`),
and the teardown (`end_session`). A session sees the service only as a `SessionHost`, so this
module and the sessions built on it (`parapipe.service.stream`, an application's own) import
neither the runtime nor each other.

An adapter whose session takes raw bytes rather than items follows one convention, which
`Client.stream_bytes` speaks: binary frames in, then the text frame ``{"type": "end"}``; JSON
messages out as results are ready, the last one ``{"type": "final", ...}``, after which the
server closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import ParapipeError
from .config import ServiceConfig
from .errors import ServiceError, error_body
from .security import check_key

__all__ = ["ByteWindow", "ConnectionHost", "SessionHost", "accept", "end_session", "outcome", "send_in_order"]

_POLICY_VIOLATION = 1008
_TRY_AGAIN_LATER = 1013


class SessionHost(Protocol):
    """The part of `parapipe.service.runtime.Service` a session uses."""

    @property
    def config(self) -> ServiceConfig: ...

    def require_engine(self) -> object:
        """Raise `NotReady` unless the engine takes items now."""
        ...

    async def run(self, item: Any, timeout: float | None = None) -> Any:
        """One item's JSON-ready result, under admission control (429 when full)."""
        ...


async def accept(host: SessionHost, websocket: WebSocket) -> bool:
    """Check the key and the engine, then accept the connection; False after refusing it.

    A refusal answers the handshake with the HTTP status and error body of a request (401, 503),
    where the server supports it; else it closes the handshake, which a client sees as HTTP 403,
    with a close code that says which refusal it was (1008: the key, 1013: try again later).
    """
    try:
        check_key(websocket.headers, host.config.api_keys)
        host.require_engine()
    except ServiceError as exc:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            # An HTTP answer with the error, so the client raises Unauthorized or NotReady, not 403.
            headers = {"WWW-Authenticate": 'Bearer realm="parapipe"'} if exc.status == 401 else {}
            response = JSONResponse({"error": error_body(exc)}, status_code=exc.status, headers=headers)
            await websocket.send_denial_response(response)
            return False
        code = _POLICY_VIOLATION if exc.status == 401 else _TRY_AGAIN_LATER
        await websocket.close(code=code, reason=exc.message[:120])
        return False
    await websocket.accept()
    return True


async def outcome(work: Awaitable[Any]) -> dict[str, Any]:
    """``{"result": ...}`` or ``{"error": {...}}``: a stream reports failures, it does not end on them."""
    try:
        return {"result": await work}
    except ParapipeError as exc:  # item errors, 429, 503, 504: all reported in the item's place
        return {"error": error_body(exc)}


async def send_in_order(
    websocket: WebSocket, replies: asyncio.Queue[asyncio.Task[dict[str, Any]]], window: ByteWindow | None = None
) -> None:
    """Send each queued reply once its task is done, in queue order (runs until cancelled);
    a reply's item bytes go back to ``window`` once the reply is sent."""
    while True:
        task = await replies.get()
        await websocket.send_text(json.dumps(await task, allow_nan=False))
        if window is not None:
            window.give(getattr(task, "parapipe_bytes", 0))


class ByteWindow:
    """Bytes of one connection's unanswered items: `take` waits while they are over the limit
    (one item is always let through, however large, so a session cannot stall on it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    async def take(self, size: int) -> None:
        while self.used and self.used + size > self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size
        self._freed.set()


class ConnectionHost:
    """The `SessionHost` one connection sees: the service, with at most ``connection_items`` of
    this connection's items admitted at once. Further items wait here, outside the queue, so one
    fast stream cannot take every slot of ``max_queue`` from the other clients."""

    def __init__(self, host: SessionHost) -> None:
        self._host = host
        self._slots = asyncio.Semaphore(host.config.connection_items)

    @property
    def config(self) -> ServiceConfig:
        return self._host.config

    def require_engine(self) -> object:
        return self._host.require_engine()

    async def run(self, item: Any, timeout: float | None = None) -> Any:
        async with self._slots:
            return await self._host.run(item, timeout)


async def end_session(
    sender: asyncio.Task[None], queue: asyncio.Queue[Any], task_of: Callable[[Any], asyncio.Task[Any] | None]
) -> None:
    """Stop the sender and cancel the work still queued for it: nobody will read those results."""
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
        await sender
    while not queue.empty():
        task = task_of(queue.get_nowait())
        if task is not None:
            task.cancel()
