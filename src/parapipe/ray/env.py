"""The runtime env of a stage's actors: the stage's own, plus parapipe's thread caps."""

from __future__ import annotations

from typing import Any


def actor_runtime_env(stage_env: dict[str, Any] | None, caps: dict[str, str]) -> dict[str, Any]:
    """Ray sets ``env_vars`` before the actor's process starts, so the caps reach every native
    thread pool at import, as a local worker's exec-time environment does. A variable the stage
    set itself wins: it asked for it by name."""
    env = dict(stage_env or {})
    env["env_vars"] = {**caps, **(env.get("env_vars") or {})}
    return env
