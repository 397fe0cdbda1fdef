"""The HTTP service: a parapipe graph behind FastAPI, with durable jobs, streaming and a dashboard.

::

    client --HTTP/WS--> OriginGuard -> BodyLimit -> routes / WS session  (app.py, routes.py, session.py)
                                                     |  bodies and sessions: the graph's adapter
                                                     |  (adapters.py; default: payloads.py, stream.py)
                                   Service (runtime.py): admission (429), readiness, status
                                      |                         |
                          JobManager (jobs.py)             Engine.submit  --> stage workers
                          SQLite Journal: every job        (sync runs, stream items)
                          is stored before 202, resumed
                          after a restart

The service names no application: a graph brings its own adapter through its first stage
(`adapters.adapter_for`). Importing this package is cheap: `create_app` and `serve` load FastAPI
and uvicorn on first use, so ``parapipe`` works without the ``service`` extra. `ServiceConfig`
holds every option of both. See docs/service.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors as _errors
from .config import ServiceConfig as ServiceConfig
from .errors import *  # noqa: F403 - the error types are part of this package's API

if TYPE_CHECKING:
    from .app import create_app as create_app
    from .server import serve as serve

__all__ = sorted([*_errors.__all__, "ServiceConfig", "create_app", "serve"])

_LAZY = {"create_app": ".app", "serve": ".server"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
