"""``WS /v1/stream`` for item graphs: items in, results out, over one connection.

Every message is one item (a text frame holds JSON, a binary frame bytes) and every reply is
``{"result": ...}`` or ``{"error": {...}}``, in the order the items came. Items are processed
concurrently, up to `STREAM_WINDOW` per connection; past that the server stops reading, so a
fast sender is slowed down by TCP instead of growing the server's memory.

This is the default adapter's session (`parapipe.service.adapters`); an application's adapter
may stream differently.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .config import STREAM_WINDOW
from .errors import BadRequest, ServiceError
from .payloads import parse_json
from .session import ByteWindow, SessionHost, end_session, outcome, send_in_order

__all__ = ["item_session"]


async def item_session(host: SessionHost, websocket: WebSocket) -> None:
    """Run items from an accepted connection until the client goes away."""
    replies: asyncio.Queue[asyncio.Task[dict[str, Any]]] = asyncio.Queue(maxsize=STREAM_WINDOW)
    window = ByteWindow(max(host.config.connection_bytes, host.config.max_body_bytes))
    sender = asyncio.create_task(send_in_order(websocket, replies, window))
    try:
        while True:
            message = await websocket.receive()
            item = _item(message, host.config.max_body_bytes)
            size = _size(message) if not isinstance(item, _Refused) else 0
            await window.take(size)  # a client that does not read its replies stops being read
            work = host.run(item) if not isinstance(item, _Refused) else _raise(item.error)
            await replies.put(_sized(asyncio.create_task(outcome(work)), size))
    except WebSocketDisconnect:
        pass
    finally:
        await end_session(sender, replies, lambda task: task)


def _size(message: MutableMapping[str, Any]) -> int:
    return len(message.get("bytes") or message.get("text") or "")


def _sized(task: asyncio.Task[dict[str, Any]], size: int) -> asyncio.Task[dict[str, Any]]:
    """The reply task, marked with its item's bytes, which the sender gives back once it is sent."""
    task.parapipe_bytes = size  # type: ignore[attr-defined]
    return task


class _Refused:
    """A message that is not an item; its error is sent back in its place in the order."""

    def __init__(self, error: ServiceError) -> None:
        self.error = error


async def _raise(error: ServiceError) -> Any:
    raise error


def _item(message: MutableMapping[str, Any], max_bytes: int) -> Any:
    """The item one WebSocket message carries; raises `WebSocketDisconnect` at the end."""
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    data, text = message.get("bytes"), message.get("text")
    if len(data or text or "") > max_bytes:
        return _Refused(BadRequest(f"the message is larger than the limit of {max_bytes} bytes", status=413))
    if data is not None:
        return data
    try:
        return parse_json(text or "")
    except BadRequest as exc:
        return _Refused(exc)
