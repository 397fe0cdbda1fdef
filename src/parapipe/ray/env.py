"""The runtime env of a stage's actors: the stage's own, plus parapipe's thread caps."""

from __future__ import annotations

import os
from typing import Any


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
