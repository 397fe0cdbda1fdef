"""parapipe: run several models in parallel on one machine, each in its own long-lived workers.

Public API; everything not listed in ``__all__`` is internal and may change.

Every worker process imports this package first (a stage's module says ``import parapipe``), so it
loads only what a worker needs: the stage, its context and the errors. The engine, the graph
builders and the clients load on first use; the engine alone pulls asyncio, the journal's sqlite3
and the planner, which cost a fresh worker more than its own code does.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any

from .context import WorkerContext, current
from .errors import (
    ConfigError,
    EngineClosed,
    GraphError,
    ItemError,
    JournalError,
    ParapipeError,
    ResultLost,
    StageError,
    StageFailed,
    TaskTimeout,
    TransportError,
    WorkerDied,
    WorkerStartupError,
)
from .stage import Stage, stage

if TYPE_CHECKING:
    from .engine import Engine
    from .graph import Parallel, Pipeline
    from .service.client import AsyncClient, Client
    from .sinks import Sink

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "ConfigError",
    "Engine",
    "EngineClosed",
    "GraphError",
    "ItemError",
    "JournalError",
    "Parallel",
    "ParapipeError",
    "Pipeline",
    "ResultLost",
    "Sink",
    "Stage",
    "StageError",
    "StageFailed",
    "TaskTimeout",
    "TransportError",
    "WorkerContext",
    "WorkerDied",
    "WorkerStartupError",
    "current",
    "run",
    "stage",
]

_LAZY = {
    "AsyncClient": "parapipe.service.client",
    "Client": "parapipe.service.client",
    "Engine": "parapipe.engine",
    "Parallel": "parapipe.graph",
    "Pipeline": "parapipe.graph",
    "Sink": "parapipe.sinks",
    "run": "parapipe.runner",
}
"""Names imported on first use: the engine side is heavy, the clients need the service extra
(httpx), and the runner imports ``parapipe`` itself."""

_OWN_MODULE = {"AsyncClient", "Client"}
"""Lazy names that keep their module's name: they live in an optional extra, documented there."""


def _claim(value: Any) -> None:
    """Tracebacks and reprs show the public path (parapipe.StageError), not the private module."""
    with contextlib.suppress(AttributeError, TypeError):
        value.__module__ = "parapipe"


for _name in __all__:
    if _name not in _LAZY:
        _claim(globals()[_name])
del _name


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'parapipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    if name not in _OWN_MODULE:
        _claim(value)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
