"""parapipe: run several models in parallel on one machine, each in its own long-lived workers.

Public API; everything not listed in ``__all__`` is internal and may change.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .context import WorkerContext, current
from .engine import Engine
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
from .graph import Parallel, Pipeline
from .sinks import Sink
from .stage import Stage, stage

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

_LAZY = {"AsyncClient": "parapipe.service.client", "Client": "parapipe.service.client", "run": "parapipe.runner"}
"""Names imported on first use: the clients' modules need an optional extra (httpx), and the
runner imports ``parapipe`` itself."""

for _name in __all__:
    # Tracebacks and reprs show the public path (parapipe.StageError), not the private module.
    if _name not in _LAZY:
        with contextlib.suppress(AttributeError, TypeError):
            globals()[_name].__module__ = "parapipe"
del _name


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'parapipe' has no attribute {name!r}")
