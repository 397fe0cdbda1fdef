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
from .jobs import job_view
from .metrics import CONTENT_TYPE, render
from .runtime import Service
from .security import check_key

__all__ = ["api", "public"]

_bearer = HTTPBearer(auto_error=False, description="an API key, when the server is configured with some")


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def authorize(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
    """Every /v1 route and /metrics: a configured bearer key, or 401. ``async`` so FastAPI does
    not hand it to a thread pool: a thread hop per request costs more than the check."""
    check_key(request.headers, _service(request).config.api_keys)


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
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed body"},
    401: {"description": "missing or wrong API key"},
    413: {"description": "body over the size limit"},
    415: {"description": "unsupported Content-Type (the graph's adapter may take bytes only)"},
    429: {"description": "admission queue full; see Retry-After"},
    503: {"description": "engine not ready, or a stage failed"},
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
    body = {"ready": service.ready(), "state": service.state, "failure": service.failure}
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
    item = await service.adapter.read_item(request)
    return JSONResponse({"result": await service.run(item)})  # JSON-ready already: no re-encoding


@api.post("/jobs", tags=["jobs"], status_code=202, summary="Queue one item as a job", openapi_extra=_ITEM_BODY)
async def submit_job(request: Request) -> JSONResponse:
    service = _service(request)
    jobs = service.require_jobs()
    item = await service.adapter.read_item(request)
    key = jobs.submit(item, service.retry_after)
    return JSONResponse({"id": key}, status_code=202, headers={"Location": f"/v1/jobs/{key}"})


@api.get("/jobs/{job_id}", tags=["jobs"], summary="A job's state and its result or error")
async def get_job(
    request: Request,
    job_id: str,
    wait: Annotated[float, Query(ge=0.0, le=MAX_LONG_POLL, description="seconds to wait for the job to end")] = 0.0,
) -> dict[str, Any]:
    jobs = _service(request).require_jobs()
    return job_view(await jobs.wait(job_id, wait))


@api.get("/jobs", tags=["jobs"], summary="One page of jobs, oldest first")
async def list_jobs(
    request: Request,
    state: Literal["queued", "running", "done", "failed", "cancelled"] | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    jobs = _service(request).require_jobs()
    chosen = State(state) if state is not None else None
    records = jobs.journal.records(chosen, offset=offset, limit=limit)
    counts = jobs.counts()
    total = counts.get(state, 0) if state is not None else sum(counts.values())
    return {"jobs": [job_view(r, with_result=False) for r in records], "offset": offset, "limit": limit, "total": total}


@api.delete("/jobs/{job_id}", tags=["jobs"], summary="Cancel a queued or running job")
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    return job_view(_service(request).require_jobs().cancel(job_id))


@api.get("/status", tags=["health"], summary="Stages, workers, queues, throughput and recent jobs")
async def status(request: Request) -> dict[str, Any]:
    return _service(request).status()
