"""Limits of the HTTP server itself, below the app: what uvicorn reads before a route runs.

uvicorn bounds neither the time a client takes to send a request head nor how many connections
it holds open, so a few hundred slowloris connections could hold the server for good; and only
its pure-Python h11 protocol bounds the head's size. `guarded_protocol` adds all three to
uvicorn's httptools protocol (its C parser is several times faster than h11, which made the
service slower than a plain FastAPI app), or to h11 where httptools is not installed.
`RedactQuery` keeps secrets a client put in a query string out of the access log.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

__all__ = ["RedactQuery", "guarded_protocol"]

log = logging.getLogger("parapipe.service")


def guarded_protocol(header_timeout: float, max_connections: int, max_header_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, closing connections past ``max_connections`` at once, any
    connection whose request head is not complete ``header_timeout`` s after it began, and any
    whose head grows past ``max_header_bytes`` before it is complete."""
    base: Any
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base

        httptools = True
    except ImportError:  # httptools is optional in uvicorn: its h11 protocol serves the same
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

        httptools = False

    class Guarded(base):
        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _parsed_head = 0
        _in_head = True
        """Between requests or inside a head (httptools' callbacks say which): the time the
        bounds apply. Not "no response pending": an app may answer before it reads the body (a
        refusal), and the rest of that body is no head, however long."""
        _crossed = False
        """A message ended inside the chunk being parsed, so the chunk is not all head."""

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refused a connection: %d are open (limit %d)", len(self.connections) - 1, max_connections)
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._awaiting_head():
                self._arm()
            self._crossed = False
            super().data_received(data)
            if not self._awaiting_head():
                self._disarm()
                return
            if self._crossed:  # the chunk ended a message (its tail was body): count the new head from here on
                self._head_bytes = 0
                return
            self._head_bytes += len(data)  # the whole chunk was head: counted only while it is incomplete
            if self._head_bytes > max_header_bytes and not self.transport.is_closing():
                log.info("refused a request head over %d bytes", max_header_bytes)
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\r\n")
                self.transport.close()

        def on_message_begin(self) -> None:  # httptools' callbacks: where the parser is
            self._in_head = True
            self._parsed_head = 0
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head = self._crossed = True
            super().on_message_complete()

        def on_url(self, url: bytes) -> None:  # and the head as it is parsed
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count_head(self, n: int) -> None:
            """A head over the limit fails to parse: uvicorn answers 400 and closes."""
            self._parsed_head += n
            if self._parsed_head > max_header_bytes:
                raise ValueError(f"request head over {max_header_bytes} bytes")

        def handle_websocket_upgrade(self, *event: Any) -> None:
            self._disarm()
            super().handle_websocket_upgrade(*event)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _awaiting_head(self) -> bool:
            """No response is due (an app may take long: a long poll) and no body is arriving."""
            idle = self.cycle is None or self.cycle.response_complete
            return idle and self._in_head if httptools else idle  # h11: its own head limit

        def _arm(self) -> None:
            if self._head_timer is None and header_timeout > 0:
                self._head_timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            self._head_bytes = self._parsed_head = 0
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expired(self) -> None:
            self._head_timer = None
            if self._awaiting_head() and not self.transport.is_closing():
                self.transport.close()

    return Guarded


_SECRET_PARAM = re.compile(r"([?&](?:[^=&]*(?:key|token|secret|password|auth)[^=&]*)=)[^&]*", re.IGNORECASE)


class RedactQuery(logging.Filter):
    """For uvicorn's access log: the values of query parameters named like a secret (``api_key``,
    ``token``...) become ``***``, so a key a client sent in a URL is not written to the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], _SECRET_PARAM.sub(r"\1***", args[2]), *args[3:])
        return True
