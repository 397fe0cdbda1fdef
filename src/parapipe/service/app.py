"""`create_app`: the FastAPI application around one graph.

Nothing starts at import or in `create_app`: the engine's workers start in the app's lifespan
(when uvicorn, or a test client, starts the app) and stop when it ends.
"""

from __future__ import annotations

import contextlib
import http
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Security, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from .. import __version__
from ..errors import ParapipeError
from .config import ServiceConfig
from .dashboard import panels
from .errors import SERVICE_STAGE
from .fastpath import FastRun, error_response
from .history import History
from .metrics import registry_for
from .payloads import BodyLimit
from .routes import api, authorize, public
from .runtime import Service
from .security import OriginGuard
from .session import ConnectionHost, accept

__all__ = ["ServiceApp", "create_app"]


def create_app(graph: Any, config: ServiceConfig | None = None) -> FastAPI:
    """An app serving ``graph`` over HTTP and WebSocket (see docs/service.md).

    Args:
        graph: a `Stage`, function, `Pipeline` or `Parallel`, as for `parapipe.Engine`.
        config: the settings; None is ``ServiceConfig()``, whose jobs are durable in
            ``parapipe-jobs.db`` (pass ``journal_path=":memory:"`` to keep none), the same
            defaults as ``parapipe serve``.
    """
    return app_for(Service(graph, config if config is not None else ServiceConfig()))


def app_for(service: Service) -> FastAPI:
    """The FastAPI app around an existing `Service` (for `serve`, which keeps a handle on it)."""

    history = History(service)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.open()
        history.start()
        try:
            yield
        finally:
            await history.stop()
            await service.close()

    app = ServiceApp(
        title="parapipe",
        summary="Run a parapipe graph over HTTP: synchronous runs, durable jobs, streaming.",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = registry_for(service)
    app.state.history = history
    app.include_router(public)
    app.include_router(api)
    app.include_router(panels, dependencies=[Security(authorize)])
    app.add_api_websocket_route("/v1/stream", _stream)
    _add_error_handlers(app)
    app.fast = _add_middleware(app, service)
    return app


class ServiceApp(FastAPI):
    """FastAPI, with the hot request (``POST /v1/run`` of a JSON item) answered by `FastRun`
    before FastAPI's own layers; every other request, and that one when `FastRun` does not
    take it, goes through FastAPI."""

    fast: FastRun | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.fast is not None and self.fast.eligible(scope):
            await self.fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _stream(websocket: WebSocket) -> None:
    """``WS /v1/stream``: the shared handshake, then the session of the graph's adapter."""
    service: Service = websocket.app.state.service
    if await accept(service, websocket):
        await service.adapter.ws_session(ConnectionHost(service), websocket)


def _add_middleware(app: FastAPI, service: Service) -> FastRun:
    """Outermost last: the origin guard sees every request first, then the body limit. The
    fast path is built from the same two guards."""
    config = service.config
    body = BodyLimit(app, max_bytes=config.max_body_bytes, budget=service.body_bytes, body_timeout=config.body_timeout)
    app.add_middleware(
        BodyLimit,
        max_bytes=config.max_body_bytes,
        budget=service.body_bytes,
        body_timeout=config.body_timeout,
    )
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    hosts = config.served_hosts()
    app.add_middleware(OriginGuard, cors_origins=config.cors_origins, allowed_hosts=hosts)
    return FastRun(service, OriginGuard(app, cors_origins=config.cors_origins, allowed_hosts=hosts), body)


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal and failure answers ``{"error": {"type", "message", "stage", ...}}``."""

    async def parapipe_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ParapipeError)
        return error_response(exc, request.method, request.url.path)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        body = {"type": "BadRequest", "message": f"invalid request: {details}", "stage": SERVICE_STAGE}
        return JSONResponse({"error": body}, status_code=422)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = http.HTTPStatus(exc.status_code).phrase.replace(" ", "")
        body = {"type": kind, "message": str(exc.detail), "stage": SERVICE_STAGE}
        return JSONResponse({"error": body}, status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(ParapipeError, parapipe_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
