"""Limits of the HTTP server itself, below the app: what uvicorn reads before a route runs.

uvicorn bounds the size of a request head (``h11_max_incomplete_event_size``) but not the time
a client takes to send it, nor how many connections it holds open, so a few hundred slowloris
connections could hold the server for good. `guarded_protocol` adds both to uvicorn's h11
protocol. `RedactQuery` keeps secrets a client put in a query string out of the access log.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

__all__ = ["RedactQuery", "guarded_protocol"]

log = logging.getLogger("parapipe.service")


def guarded_protocol(header_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing connections past ``max_connections`` at once and any
    connection whose request head is not complete ``header_timeout`` s after it began."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refused a connection: %d are open (limit %d)", len(self.connections) - 1, max_connections)
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._awaiting_head():
                self._arm()
            super().data_received(data)
            if not self._awaiting_head():
                self._disarm()

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._disarm()
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _awaiting_head(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._head_timer is None and header_timeout > 0:
                self._head_timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expired(self) -> None:
            self._head_timer = None
            if self._awaiting_head() and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11


_SECRET_PARAM = re.compile(r"([?&](?:[^=&]*(?:key|token|secret|password|auth)[^=&]*)=)[^&]*", re.IGNORECASE)


class RedactQuery(logging.Filter):
    """For uvicorn's access log: the values of query parameters named like a secret (``api_key``,
    ``token``...) become ``***``, so a key a client sent in a URL is not written to the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], _SECRET_PARAM.sub(r"\1***", args[2]), *args[3:])
        return True
