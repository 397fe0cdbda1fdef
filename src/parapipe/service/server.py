"""`serve`: run a graph behind uvicorn until SIGINT or SIGTERM.

Shutdown order on a signal: uvicorn stops accepting connections and lets open requests finish
(up to the drain timeout), then the lifespan drains the engine; jobs it could not finish stay
in the journal and resume on the next start.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError, ParapipeError
from .config import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    ServiceConfig,
    api_keys_from_env,
    check_bind,
)

__all__ = ["serve"]

log = logging.getLogger("parapipe.service")


def serve(
    graph: Any,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    api_keys: Iterable[str] = (),
    insecure: bool = False,
    journal_path: str | os.PathLike[str] | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    cors_origins: Iterable[str] = (),
    allowed_hosts: Iterable[str] | None = None,
    engine_options: Mapping[str, Any] | None = None,
    log_level: str = "info",
    fd: int | None = None,
) -> None:
    """Serve ``graph`` (a graph object or ``"MODULE:NAME"``) on ``host:port`` until stopped.

    Refuses (`InsecureBind`) a non-loopback ``host`` without API keys unless ``insecure``; keys
    come from ``api_keys`` and ``PARAPIPE_API_KEYS``. Raises the engine's error when its workers
    cannot start, after the server has shut down. ``fd``: serve on an inherited listening socket
    instead of binding ``host:port`` (socket activation; tests use it so connections queue up
    before the server runs). Other arguments: see `create_app`.
    """
    keys = api_keys_from_env(api_keys)
    if fd is not None:
        host = _socket_host(fd)
    check_bind(host, keys, insecure)
    if insecure and allowed_hosts is None:
        allowed_hosts = ("*",)  # a trusted network: any Host its proxy forwards
    config = ServiceConfig(
        api_keys=keys,
        max_queue=max_queue,
        max_body_bytes=max_body_bytes,
        journal_path=os.fspath(journal_path) if journal_path is not None else ":memory:",
        request_timeout=request_timeout,
        drain_timeout=drain_timeout,
        cors_origins=tuple(cors_origins),
        allowed_hosts=tuple(allowed_hosts) if allowed_hosts is not None else None,
    )
    _run(_load(graph), config, {"host": host, "port": port, "log_level": log_level}, fd, engine_options)


def _socket_host(fd: int) -> str:
    """The address an inherited socket is bound to (checked like ``host``)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        return str(sock.getsockname()[0])


def _load(graph: Any) -> Any:
    if not isinstance(graph, str):
        return graph
    from ..graph import load_graph

    return load_graph(graph)


def _run(
    graph: Any, config: ServiceConfig, where: dict[str, Any], fd: int | None, engine_options: Mapping[str, Any] | None
) -> None:
    try:
        import uvicorn

        from .app import app_for
        from .runtime import Service
    except ImportError as exc:
        raise ConfigError(
            f"the HTTP service needs its extra ({exc.name} is missing): pip install 'parapipe[service]'"
        ) from exc
    service = Service(graph, config, engine_options)
    server = uvicorn.Server(
        uvicorn.Config(
            app_for(service),
            **where,
            ws_max_size=config.max_body_bytes,
            timeout_graceful_shutdown=int(config.drain_timeout),
            server_header=False,
        )
    )
    failures: list[ParapipeError] = []

    def stop(exc: ParapipeError) -> None:
        failures.append(exc)
        server.should_exit = True

    service.on_failure = stop
    # Not uvicorn's own fd option: it takes every inherited socket for AF_UNIX, so asyncio
    # leaves Nagle's algorithm on for TCP and each response waits ~40 ms for a delayed ACK.
    server.run(sockets=[socket.socket(fileno=fd)] if fd is not None else None)
    if failures:
        raise failures[0]
