"""How a graph meets HTTP: what a request body becomes, and what a WebSocket session is.

The service is generic: a POST body becomes one item (JSON or bytes, `payloads.read_item`) and
a WebSocket carries one item per message (`stream.item_session`). That is `ItemAdapter`. An
application whose items take another shape brings its own `ServiceAdapter`, and its graph says
so: `adapter_for` calls ``service_adapter()`` on the first stage the graph runs, when that stage
has one. The service therefore names no application, and an application's serving code is
imported only when a graph of that application is served.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.websockets import WebSocket

from ..errors import ConfigError
from ..graph import Pipeline
from .payloads import read_item
from .session import SessionHost
from .stream import item_session

__all__ = ["ADAPTER_HOOK", "ItemAdapter", "ServiceAdapter", "adapter_for"]

ADAPTER_HOOK = "service_adapter"
"""The method a graph's first stage may define: ``service_adapter() -> ServiceAdapter``."""


class ServiceAdapter(Protocol):
    """One application's way in: request bodies and the WebSocket session."""

    @property
    def name(self) -> str:
        """Shown as ``service.adapter`` in ``GET /v1/status``."""
        ...

    async def read_item(self, request: Request) -> Any:
        """The item a ``POST /v1/run`` or ``/v1/jobs`` body carries; `BadRequest` when malformed."""
        ...

    async def ws_session(self, host: SessionHost, websocket: WebSocket) -> None:
        """Serve one accepted ``WS /v1/stream`` connection until it ends (see `session`)."""
        ...


class ItemAdapter:
    """The default: JSON or bytes items, one WebSocket message per item."""

    name = "items"

    async def read_item(self, request: Request) -> Any:
        return await read_item(request)

    async def ws_session(self, host: SessionHost, websocket: WebSocket) -> None:
        await item_session(host, websocket)


def adapter_for(graph: Any) -> ServiceAdapter:
    """The adapter the graph's first stage names (its ``service_adapter()``), else `ItemAdapter`.

    The first stage decides because it is the one that receives the items. A graph that starts
    with a `Parallel` has no single first stage and gets the default.
    """
    first = graph
    while isinstance(first, Pipeline):
        first = first.steps[0]
    hook = getattr(first, ADAPTER_HOOK, None)
    if hook is None:
        return ItemAdapter()
    adapter = hook()
    missing = [name for name in ("name", "read_item", "ws_session") if not hasattr(adapter, name)]
    if missing:
        raise ConfigError(
            f"{type(first).__name__}.{ADAPTER_HOOK}() returned a {type(adapter).__name__}, which lacks "
            f"{', '.join(missing)}; return an object with the methods of parapipe.service.adapters.ServiceAdapter"
        )
    return adapter
