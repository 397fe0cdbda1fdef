"""parapipe: run several models in parallel on one machine, each in its own long-lived workers.

Public API; everything not listed in ``__all__`` is internal and may change.
"""

from __future__ import annotations

import contextlib

from .context import WorkerContext, current
from .engine import Engine
from .errors import (
    ConfigError,
    EngineClosed,
    GraphError,
    ItemError,
    JournalError,
    ParapipeError,
    StageError,
    StageFailed,
    TaskTimeout,
    TransportError,
    WorkerDied,
    WorkerStartupError,
)
from .graph import Parallel, Pipeline
from .stage import Stage, stage

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Engine",
    "EngineClosed",
    "GraphError",
    "ItemError",
    "JournalError",
    "Parallel",
    "ParapipeError",
    "Pipeline",
    "Stage",
    "StageError",
    "StageFailed",
    "TaskTimeout",
    "TransportError",
    "WorkerContext",
    "WorkerDied",
    "WorkerStartupError",
    "current",
    "stage",
]

for _name in __all__:
    # Tracebacks and reprs show the public path (parapipe.StageError), not the private module.
    with contextlib.suppress(AttributeError, TypeError):
        globals()[_name].__module__ = "parapipe"
del _name
