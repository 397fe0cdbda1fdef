"""The HTTP routes: health, synchronous runs, jobs, status, metrics and the dashboard.

Handlers stay thin: they read the request, call the `Service`, and shape the JSON. Every
refusal is a `ServiceError` turned into ``{"error": {...}}`` by the app's exception handlers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..journal import State
from .config import MAX_LONG_POLL
from .dashboard import dashboard_html
from .errors import scrub_paths
from .jobs import job_view
from .metrics import CONTENT_TYPE, render
from .payloads import BODY_BYTES
from .runtime import Service
from .security import caller_owner, check_key

__all__ = ["MAX_OFFSET", "api", "public"]

MAX_OFFSET = 2**62
"""Largest ``offset`` of the jobs list: SQLite's integers end at 2**63 - 1."""

_bearer = HTTPBearer(auto_error=False, description="an API key, when the server is configured with some")


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def authorize(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
    """Every /v1 route and /metrics: a configured bearer key, or 401. ``async`` so FastAPI does
    not hand it to a thread pool: a thread hop per request costs more than the check."""
    check_key(request.headers, _service(request).config.api_keys)


def _owner(request: Request) -> str | None:
    """Whose jobs the caller may see: its own (the owner id of its key), or all (None) for an admin key."""
    return caller_owner(request.headers, _service(request).config)


_ITEM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["item"], "properties": {"item": {}}},
                "example": {"item": "any JSON value"},
            },
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "stage"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}, "stage": {"type": "string"}},
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("malformed body"),
    401: _error("missing or wrong API key"),
    404: _error("no such job for this API key"),
    408: _error("the body paused too long"),
    409: _error("the job already finished"),
    413: _error("body over the size limit"),
    415: _error("unsupported Content-Type (the graph's adapter may take bytes only)"),
    422: _error("invalid request, or an item nested too deeply"),
    429: _error("admission queue full, or too many body bytes in flight; see Retry-After"),
    500: _error("the item failed on the server side (a worker died), or its result has no JSON form"),
    503: _error("engine not ready, or a stage failed"),
    504: _error("no result within the request timeout"),
}

public = APIRouter()
api = APIRouter(prefix="/v1", dependencies=[Security(authorize)], responses=_ERRORS)


@public.get("/healthz", tags=["health"], summary="Liveness: the process serves requests")
async def healthz(request: Request) -> JSONResponse:
    service = _service(request)
    if service.state == "failed":
        return JSONResponse({"status": "failed", "error": service.failure}, status_code=503)
    return JSONResponse({"status": "ok", "state": service.state})


@public.get("/readyz", tags=["health"], summary="Readiness: every stage has a ready worker")
async def readyz(
    request: Request,
    wait: Annotated[float, Query(ge=0.0, le=MAX_LONG_POLL, description="seconds to wait for the start")] = 0.0,
) -> JSONResponse:
    service = _service(request)
    await service.wait_started(wait)
    failure = service.failure or service.stalled()
    body = {"ready": service.ready(), "state": service.state, "failure": scrub_paths(failure) if failure else None}
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@public.get("/", include_in_schema=False)
async def dashboard() -> HTMLResponse:
    headers = {"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
    return HTMLResponse(dashboard_html(), headers=headers)


@public.get("/metrics", tags=["health"], dependencies=[Security(authorize)], summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(render(request.app.state.metrics), media_type=CONTENT_TYPE)


@api.post("/run", tags=["run"], summary="Process one item and wait for its result", openapi_extra=_ITEM_BODY)
async def run(request: Request) -> JSONResponse:
    service = _service(request)
    service.require_engine()  # 503 before reading a large body the engine cannot take
    with service.admitted():  # 429 before reading it when the queue is full
        item = await service.adapter.read_item(request)
        return JSONResponse({"result": await service.run(item, admitted=True)})  # JSON-ready: no re-encoding


@api.post("/jobs", tags=["jobs"], status_code=202, summary="Queue one item as a job", openapi_extra=_ITEM_BODY)
async def submit_job(request: Request) -> JSONResponse:
    service = _service(request)
    jobs = service.require_jobs()
    with service.admitted() as slot:  # 429 before reading the body when the queue is full
        item = await service.adapter.read_item(request)
        body = getattr(request.state, BODY_BYTES, [0])
        key = jobs.accept(item, _owner(request) or "", body[0])
        slot.keep()  # the job holds its slot and its body's bytes until it ends
        body[0] = 0
    return JSONResponse({"id": key}, status_code=202, headers={"Location": f"/v1/jobs/{key}"})


@api.get("/jobs/{job_id}", tags=["jobs"], summary="A job's state and its result or error")
async def get_job(
    request: Request,
    job_id: str,
    wait: Annotated[float, Query(ge=0.0, le=MAX_LONG_POLL, description="seconds to wait for the job to end")] = 0.0,
) -> JSONResponse:
    jobs = _service(request).require_jobs()
    # A JSONResponse, not FastAPI's encoder: that one recurses several frames per level of a result.
    return JSONResponse(job_view(await jobs.wait(job_id, wait, _owner(request))))


@api.get("/jobs", tags=["jobs"], summary="One page of jobs, oldest first")
async def list_jobs(
    request: Request,
    state: Literal["queued", "running", "done", "failed", "cancelled"] | None = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    jobs = _service(request).require_jobs()
    chosen = State(state) if state is not None else None
    records, total = jobs.page(_owner(request), chosen, offset, limit)
    return {"jobs": [job_view(r, with_result=False) for r in records], "offset": offset, "limit": limit, "total": total}


@api.delete("/jobs/{job_id}", tags=["jobs"], summary="Cancel a queued or running job")
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    return job_view(_service(request).require_jobs().cancel(job_id, _owner(request)))


@api.get("/status", tags=["health"], summary="Stages, workers, queues, throughput and recent jobs")
async def status(request: Request) -> dict[str, Any]:
    service, owner = _service(request), _owner(request)
    body = service.status()
    if owner is not None and service.jobs is not None:  # recent jobs: only the caller's own
        owners = service.jobs.owners
        body["jobs"]["recent"] = [j for j in body["jobs"]["recent"] if owners.owner_of(j["id"]) == owner]
    return body
