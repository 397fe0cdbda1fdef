"""``WS /v1/stream``: items in, results out, over one connection.

For most graphs every message is one item (a text frame holds JSON, a binary frame bytes) and
every reply is ``{"result": ...}`` or ``{"error": {...}}``, in the order the items came. Items
are processed concurrently, up to `WINDOW` per connection; past that the server stops reading,
so a fast sender is slowed down by TCP instead of growing the server's memory.

Speech graphs stream audio instead: see `parapipe.service.audio_stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from ..errors import ParapipeError
from .errors import BadRequest, ServiceError, error_body
from .runtime import Service
from .security import check_key

__all__ = ["WINDOW", "outcome", "stream"]

WINDOW = 64
"""Items in flight per connection."""
_POLICY_VIOLATION = 1008
_TRY_AGAIN_LATER = 1013


async def stream(websocket: WebSocket) -> None:
    """The WebSocket endpoint: authenticate, then run a JSON or an audio session."""
    service: Service = websocket.app.state.service
    try:
        check_key(websocket.headers, service.config.api_keys)
        service.require_engine()
    except ServiceError as exc:
        code = _POLICY_VIOLATION if exc.status == 401 else _TRY_AGAIN_LATER
        await websocket.close(code=code, reason=exc.message[:120])
        return
    await websocket.accept()
    if service.audio:
        from .audio_stream import audio_session

        await audio_session(service, websocket)
    else:
        await _item_session(service, websocket)


async def outcome(work: Awaitable[Any]) -> dict[str, Any]:
    """``{"result": ...}`` or ``{"error": {...}}``: a stream reports failures, it does not end on them."""
    try:
        return {"result": await work}
    except ParapipeError as exc:  # item errors, 429, 503, 504: all reported in the item's place
        return {"error": error_body(exc)}


async def _item_session(service: Service, websocket: WebSocket) -> None:
    replies: asyncio.Queue[asyncio.Task[dict[str, Any]]] = asyncio.Queue(maxsize=WINDOW)
    sender = asyncio.create_task(_send_in_order(websocket, replies))
    try:
        while True:
            item = _item(await websocket.receive(), service.config.max_body_bytes)
            work = service.run(item) if not isinstance(item, _Refused) else _raise(item.error)
            await replies.put(asyncio.create_task(outcome(work)))
    except WebSocketDisconnect:
        pass
    finally:
        await end_session(sender, replies, lambda task: task)


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


async def _send_in_order(websocket: WebSocket, replies: asyncio.Queue[asyncio.Task[dict[str, Any]]]) -> None:
    while True:
        task = await replies.get()
        await websocket.send_text(json.dumps(await task, allow_nan=False))


class _Refused:
    """A message that is not an item; its error is sent back in its place in the order."""

    def __init__(self, error: ServiceError) -> None:
        self.error = error


async def _raise(error: ServiceError) -> Any:
    raise error


def _item(message: dict[str, Any], max_bytes: int) -> Any:
    """The item one WebSocket message carries; raises `WebSocketDisconnect` at the end."""
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    data, text = message.get("bytes"), message.get("text")
    if len(data or text or "") > max_bytes:
        return _Refused(BadRequest(f"the message is larger than the limit of {max_bytes} bytes", status=413))
    if data is not None:
        return data
    try:
        return json.loads(text or "")
    except (ValueError, RecursionError) as exc:
        return _Refused(BadRequest(f"a text message must be one JSON item ({exc})"))
