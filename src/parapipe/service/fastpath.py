"""`FastRun`: ``POST /v1/run`` with a JSON body, answered in front of FastAPI's stack.

A synchronous run of a small item is the service's hot request. Through FastAPI it passes about
ten ASGI layers (telemetry, error middleware, our two guards, exception middleware, exit stack,
routers, dependency solving with its query parsing) before the route runs: on a no-op graph that
cost more than the engine round trip. `FastRun` makes the same checks in the same order with the
same code, and answers with the same JSON:

1. `OriginGuard.check`: two Host headers 400, a foreign host or origin 403;
2. `BodyLimit.reserve`: a Content-Length that is no number 400, over the limit 413, over the byte
   budget 429 (these three close the connection, the body is not read);
3. `check_key`: 401 with ``WWW-Authenticate``;
4. `Service.require_engine` 503, then an admission slot or 429 with ``Retry-After``;
5. the body through `BodyLimit.counting` (413 when a chunked body passes the limit, 408 when it
   pauses), `json_item` (400 malformed, 422 not ``{"item": ...}`` or too deep);
6. `Service.run`: the result, or the item's error as the app's exception handler shapes it.

Anything else (another Content-Type, CORS configured, an application adapter that reads bodies
its own way) goes through FastAPI unchanged: `eligible` decides before a byte is sent.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import Receive, Scope, Send

from ..errors import ParapipeError
from .adapters import ItemAdapter
from .errors import BadRequest, Overloaded, ServiceError, error_body, error_status
from .payloads import JSON, BodyLimit, json_item, refuse_body
from .runtime import Service
from .security import WWW_AUTHENTICATE, OriginGuard, check_key, refuse

__all__ = ["RUN_PATH", "FastRun", "error_headers", "error_response"]

log = logging.getLogger("parapipe.service")

RUN_PATH = "/v1/run"
_JSON_HEADER = (b"content-type", JSON.encode())


def error_headers(exc: Exception) -> dict[str, str]:
    """``Retry-After`` for a refusal that has one, ``WWW-Authenticate`` for a 401."""
    headers: dict[str, str] = {}
    if isinstance(exc, ServiceError) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, ServiceError) and exc.status == 401:
        headers.update(WWW_AUTHENTICATE)
    return headers


def error_response(exc: ParapipeError, method: str, path: str) -> JSONResponse:
    """``{"error": {...}}`` for a parapipe error met while serving ``method path``, logged as the
    server's fault (a warning) or the client's (one info line, never a traceback)."""
    status = error_status(exc)
    if status >= 500 and not isinstance(exc, ServiceError):
        log.warning("request failed: %s", exc)
    elif status < 500:
        log.info("refused %s %s: %d %s", method, path, status, str(exc)[:200])
    return JSONResponse({"error": error_body(exc)}, status_code=status, headers=error_headers(exc))


class FastRun:
    """Serves `eligible` requests; built once per app from the same guards its middleware uses."""

    def __init__(self, service: Service, guard: OriginGuard, body: BodyLimit) -> None:
        self.service = service
        self.guard = guard
        self.body = body
        self.enabled = not service.config.cors_origins and type(service.adapter) is ItemAdapter
        """CORS adds headers this path does not write; an application adapter reads its own bodies."""

    def eligible(self, scope: Scope) -> bool:
        """A plain ``POST /v1/run`` with a JSON body (by its first Content-Type, as Starlette reads it)."""
        if not self.enabled or scope["path"] != RUN_PATH or scope["method"] != "POST" or scope.get("root_path"):
            return False
        for name, value in scope["headers"]:
            if name == b"content-type":
                return value.split(b";")[0].strip().lower() == _JSON_HEADER[1]
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.guard.check(scope["headers"])
        if refusal is not None:
            await refuse(refusal, scope, receive, send)
            return
        try:
            held = self.body.reserve(scope["headers"])
        except (BadRequest, Overloaded) as exc:
            await refuse_body(exc, scope, receive, send)
            return
        started = False

        async def sending(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._answer(scope, self.body.counting(receive, held), sending)
        except ParapipeError as exc:
            await error_response(exc, "POST", RUN_PATH)(scope, receive, send)
        except Exception:  # as Starlette's error middleware does: a plain 500, and the traceback in the log
            if not started:
                await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        finally:
            self.body.budget.give(held[0])

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = self.service
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        headers = {} if authorization is None else {"authorization": authorization.decode("latin-1")}
        check_key(headers, service.config.api_keys)
        service.require_engine()  # 503 before reading a large body the engine cannot take
        with service.admitted():  # 429 before reading it when the queue is full
            body = await _read_body(receive)
            if body is None:
                return  # the client left before its body was complete: nobody to answer
            result = await service.run(json_item(body), admitted=True)
        content = json.dumps({"result": result}, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(content)).encode()), _JSON_HEADER]})  # fmt: skip
        await send({"type": "http.response.body", "body": content})


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
