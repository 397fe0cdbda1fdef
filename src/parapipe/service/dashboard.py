"""The dashboard: one static HTML page whose inline script polls the server every second, and
the two routes only it needs, ``/v1/history`` (the charts' samples) and ``/v1/graph`` (the shape
it draws).

No build step and no third-party assets, so it works on a machine without internet and its
content security is easy to review: the page is constant, and data only enters it as text.
The charts and the graph are SVG the page's own script draws.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ..graph import as_graph, graph_shape
from .config import MAX_LONG_POLL
from .history import History

__all__ = ["dashboard_html", "panels"]

panels = APIRouter(prefix="/v1", tags=["dashboard"])
"""The dashboard's data routes; the app includes them behind the same API keys as ``/v1``."""


@functools.cache
def dashboard_html() -> str:
    """The page, read once from the package data next to this module."""
    return resources.files(__package__).joinpath("dashboard.html").read_text(encoding="utf-8")


@panels.get("/history", summary="The last ten minutes of per-stage samples, 429s and restarts")
async def history(
    request: Request,
    since: Annotated[
        float, Query(ge=0.0, le=1e11, allow_inf_nan=False, description="only samples after this time (epoch seconds)")
    ] = 0.0,
    wait: Annotated[float, Query(ge=0.0, le=MAX_LONG_POLL, description="seconds to wait for a newer sample")] = 0.0,
) -> dict[str, Any]:
    sampler: History = request.app.state.history
    await sampler.wait_newer(since, wait)
    return sampler.view(since)


@panels.get("/graph", summary="The graph's Pipeline/Parallel shape, by stage name")
async def graph(request: Request) -> dict[str, Any]:
    service = request.app.state.service
    named = service.engine.graph if service.engine is not None else as_graph(service.graph)
    return {"shape": graph_shape(named)}
