"""parapipe: run several models in parallel on one machine, each in its own long-lived workers.

Public API; everything not listed in ``__all__`` is internal and may change.
"""

from __future__ import annotations

from .context import WorkerContext, current
from .errors import (
    ConfigError,
    EngineClosed,
    GraphError,
    ItemError,
    ParapipeError,
    StageError,
    StageFailed,
    TaskTimeout,
    WorkerDied,
    WorkerStartupError,
)
from .stage import Stage, stage

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EngineClosed",
    "GraphError",
    "ItemError",
    "ParapipeError",
    "Stage",
    "StageError",
    "StageFailed",
    "TaskTimeout",
    "WorkerContext",
    "WorkerDied",
    "WorkerStartupError",
    "current",
    "stage",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        try:
            _obj.__module__ = "parapipe"
        except (AttributeError, TypeError):
            pass
del _name, _obj
