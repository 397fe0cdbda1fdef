"""The Ray backend: ``Engine(graph, backend="ray")`` runs each replica as a Ray actor.

Imported only when that backend is chosen, so Ray stays an optional extra. What runs where:
the driver (the engine's process) keeps everything a local engine keeps in its parent: the
queues, batching, retries, the journal, ``map``'s window; each actor runs one replica's
``setup()`` and items. See docs/ray.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .cluster import RayConnection, RayPoolSet

__all__ = ["add_backend_arguments", "apply_backend_arguments", "load"]


def load() -> tuple[type[RayPoolSet], Callable[[str | None], RayConnection]]:
    """(the pool set class, `connect`), or a `ConfigError` saying how to install Ray."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            'backend="ray" needs Ray: pip install "parapipe[ray]" (or pip install "ray>=2.9"); or use backend="local"'
        )
    from .cluster import RayPoolSet, connect

    return RayPoolSet, connect


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--ray-address``, for every command that starts an engine."""
    where = "where replicas run: local processes or Ray actors (default: $PARAPIPE_BACKEND, else local)"
    parser.add_argument("--backend", choices=["local", "ray"], default=None, help=where)
    cluster = "Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: $PARAPIPE_RAY_ADDRESS, else a local Ray)"
    parser.add_argument("--ray-address", default=None, metavar="ADDR", help=cluster)


def apply_backend_arguments(args: argparse.Namespace) -> None:
    """The options become the defaults every `Engine` of this process reads, so a command need
    not thread them through to where its engine is built."""
    if getattr(args, "backend", None):
        os.environ["PARAPIPE_BACKEND"] = args.backend
    if getattr(args, "ray_address", None):
        os.environ["PARAPIPE_RAY_ADDRESS"] = args.ray_address
