"""`serve`: run a graph behind uvicorn until SIGINT or SIGTERM.

Shutdown order on a signal: uvicorn stops accepting connections and lets open requests finish
(up to the drain timeout), then the lifespan drains the engine; jobs it could not finish stay
in the journal and resume on the next start.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from ..errors import ConfigError, ParapipeError
from ..graph import load_graph
from .config import DEFAULT_HOST, DEFAULT_PORT, KEEP_ALIVE_SECONDS, ServiceConfig, check_bind

__all__ = ["serve"]

log = logging.getLogger("parapipe.service")


def serve(
    graph: Any,
    config: ServiceConfig | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    fd: int | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``graph`` (a graph object, or ``"MODULE:NAME"`` to import) on ``host:port`` until stopped.

    Refuses (`InsecureBind`) a non-loopback ``host`` without API keys unless ``config.insecure``.
    Raises the engine's error when its workers cannot start, after the server has shut down.
    ``config``: as for `create_app` (the same defaults). ``fd``: serve on an inherited listening
    socket instead of binding ``host:port`` (socket activation; tests use it so connections
    queue up before the server runs).
    """
    config = config if config is not None else ServiceConfig()
    if fd is not None:
        host = _socket_host(fd)
    check_bind(host, config.api_keys, config.insecure)
    where = {"host": host, "port": port, "log_level": log_level}
    _run(load_graph(graph) if isinstance(graph, str) else graph, config, where, fd)


def _socket_host(fd: int) -> str:
    """The address an inherited socket is bound to (checked like ``host``)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        return str(sock.getsockname()[0])


def _run(graph: Any, config: ServiceConfig, where: dict[str, Any], fd: int | None) -> None:
    try:
        import uvicorn

        from .app import app_for
        from .limits import RedactQuery, guarded_protocol
        from .runtime import Service
    except ImportError as exc:
        raise ConfigError(
            f"the HTTP service needs its extra ({exc.name} is missing): pip install 'parapipe[service]'"
        ) from exc
    service = Service(graph, config)
    server = uvicorn.Server(
        uvicorn.Config(
            app_for(service),
            **where,
            http=guarded_protocol(config.header_timeout, config.max_connections, config.max_header_bytes),
            h11_max_incomplete_event_size=config.max_header_bytes,
            ws_max_size=config.max_body_bytes,
            timeout_graceful_shutdown=int(config.drain_timeout),
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            server_header=False,
        )
    )
    logging.getLogger("uvicorn.access").addFilter(RedactQuery())
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
