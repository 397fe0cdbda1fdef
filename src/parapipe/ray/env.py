"""How a stage's actors are created: their resources, and their runtime env (the stage's own,
plus parapipe's thread caps)."""

from __future__ import annotations

import os
from typing import Any

from ..resources import WorkerBudget
from ..stage import Stage


def actor_runtime_env(
    stage_env: dict[str, Any] | None, caps: dict[str, str], python: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Ray sets ``env_vars`` before the actor's process starts, so the caps reach every native
    thread pool at import, as a local worker's exec-time environment does. A variable the stage
    set itself wins: it asked for it by name. A stage's ``python=`` becomes Ray's
    ``py_executable`` (an env directory is given as its ``bin/python``), unless the runtime env
    names one itself; it must exist on every node."""
    env = dict(stage_env or {})
    if python is not None:
        python = os.fspath(python)
        path = os.path.join(python, "bin", "python") if os.path.isdir(python) else python
        env.setdefault("py_executable", path)
    env["env_vars"] = {**caps, **(env.get("env_vars") or {})}
    return env


def actor_gpus(stage: Stage, replica: int) -> float:
    """The GPUs one replica asks Ray for: a share of one device (``gpus=0.25``: four actors
    share it), a whole number of devices, or as many as its ``gpus`` list names."""
    if isinstance(stage.gpus, (int, float)) and not isinstance(stage.gpus, bool):
        return float(stage.gpus)
    return float(len(stage.gpus_for(replica)))


def actor_options(stage: Stage, budget: WorkerBudget, caps: dict[str, str]) -> dict[str, Any]:
    """The ``.options()`` of a replica's actor. Ray restarts a dead actor (``max_restarts=-1``)
    but never re-runs its calls (``max_task_retries=0``): parapipe's own rule retries items. A
    ``concurrency=N`` stage's actor runs N calls at once (a threaded actor; `items` runs them)."""
    return {
        "num_cpus": budget.threads,
        "max_concurrency": stage.concurrency,
        "num_gpus": actor_gpus(stage, budget.replica),
        "max_restarts": -1,
        "max_task_retries": 0,
        "runtime_env": actor_runtime_env(stage.runtime_env, caps, stage.python),
    }
