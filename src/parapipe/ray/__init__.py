"""The Ray backend: ``Engine(graph, backend="ray")`` runs each replica as a Ray actor.

Imported only when that backend is chosen, so Ray stays an optional extra. What runs where:
the driver (the engine's process) keeps everything a local engine keeps in its parent: the
queues, batching, retries, the journal, ``map``'s window; each actor runs one replica's
``setup()`` and items. See docs/ray.md.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .cluster import RayConnection, RayPoolSet

__all__ = ["load"]


def load() -> tuple[type[RayPoolSet], Callable[[str | None], RayConnection]]:
    """(the pool set class, `connect`), or a `ConfigError` saying how to install Ray."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            'backend="ray" needs Ray: pip install "parapipe[ray]" (or pip install "ray>=2.9"); '
            'or use backend="local"'
        )
    from .cluster import RayPoolSet, connect

    return RayPoolSet, connect
