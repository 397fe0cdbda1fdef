"""Clients for ``parapipe serve``: `Client` (blocking) and `AsyncClient` (asyncio), same methods.

Also ``parapipe.Client`` and ``parapipe.AsyncClient``, which import this module (and httpx) on
first use only::

    with Client("http://127.0.0.1:8000", api_key="...") as client:
        client.run({"x": 1})                       # one item, wait for its result
        job = client.submit(file="meeting.wav")    # a local file is read here and uploaded
        client.result(job, timeout=600)            # long-polls until the job ends
        for result in client.stream(items): ...    # many items over one WebSocket

Errors come back as the exceptions the server met: a failed item raises its `StageError`,
`WorkerDied` or `TaskTimeout` (rebuilt with ``ItemError.from_dict``), a full server raises
`Overloaded` (with ``retry_after``), a wrong key `Unauthorized`, and so on (see
`parapipe.service.errors`). Needs httpx, and websockets for streaming (the ``service`` extra).

Concurrency: one client opens up to ``max_connections`` HTTP connections (`DEFAULT_MAX_CONNECTIONS`),
one per request in flight; more concurrent calls wait for a free connection, so an
``asyncio.gather`` of more calls than that is capped there, not at the server. A stream keeps
`STREAM_WINDOW` items in flight on its one WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import IO, Any

import httpx

from ..errors import ConfigError
from .config import DEFAULT_MAX_CONNECTIONS as SERVER_MAX_CONNECTIONS
from .config import KEEP_ALIVE_SECONDS, MAX_LONG_POLL, STREAM_WINDOW
from .errors import JobCancelled, RequestTimeout, ServiceError, Unreachable, error_from, raise_for_error

__all__ = ["DEFAULT_MAX_CONNECTIONS", "AsyncClient", "Client"]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 330.0
"""Seconds per HTTP call: above the server's default request timeout (300 s), so its 504 arrives first."""
NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
"""httpx writes a POST's headers and body separately: with Nagle's algorithm on, the body then
waits for the server's delayed ACK, about 40 ms per request on Linux."""
DEFAULT_MAX_CONNECTIONS = SERVER_MAX_CONNECTIONS * 3 // 4
"""Connections one client may open: three quarters of what a default server accepts
(``--max-connections``, 256), instead of stopping at httpx's default of 100. Not all of it: the
server's cap counts every client's connections, the dashboard's, and the ones a client has
closed but the server has not yet seen go; a client that took every slot had its last
connections refused ("server disconnected without sending a response"). Requests past it wait
in the client for a free connection, so 300 concurrent calls still all complete. Each
connection is a file descriptor: lower it under a small ``ulimit -n``. Idle connections are all
kept alive, so the next burst does not reconnect."""

FileInput = str | os.PathLike[str] | bytes | IO[bytes]


class _Base:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/v1/stream"


class Client(_Base):
    """A blocking client; see the module docstring.

    Args:
        url: the server's base URL.
        api_key: sent as ``Authorization: Bearer``; None sends none.
        timeout: seconds per HTTP call.
        max_connections: connections kept for calls from several threads at once.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        super().__init__(url, api_key)
        transport = httpx.HTTPTransport(socket_options=NO_DELAY, limits=_limits(max_connections))
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            try:
                response = self._http.request(method, path, **kwargs)
            except _DROPPED:
                if method != "GET":
                    raise
                response = self._http.request(method, path, **kwargs)  # on a fresh connection
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc
        return _decode(response)

    def run(self, item: Any = None, *, file: FileInput | None = None, filename: str | None = None) -> Any:
        """Process one item (or one file's bytes) and return its result."""
        return self._call("POST", "/v1/run", **_body(item, file, filename))["result"]

    def submit(self, item: Any = None, *, file: FileInput | None = None, filename: str | None = None) -> str:
        """Queue one item as a job; returns its id once the server has stored it."""
        return str(self._call("POST", "/v1/jobs", **_body(item, file, filename))["id"])

    def job(self, job_id: str, *, wait: float = 0.0) -> dict[str, Any]:
        """The job as the server shows it (state, timings, result or error)."""
        return dict(self._call("GET", f"/v1/jobs/{job_id}", params={"wait": wait}))

    def result(self, job_id: str, *, wait: bool = True, timeout: float | None = None) -> Any:
        """The job's result; raises its error, `JobCancelled`, or `RequestTimeout` if it is not done in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        view = self.job(job_id)
        while wait and view["state"] in ("queued", "running") and _left(deadline) > 0:
            view = self.job(job_id, wait=min(MAX_LONG_POLL, _left(deadline)))
        return _job_result(view)

    def jobs(self, state: str | None = None, *, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """One page of jobs: ``{"jobs": [...], "total", "offset", "limit"}``."""
        params = {"offset": offset, "limit": limit, **({"state": state} if state else {})}
        return dict(self._call("GET", "/v1/jobs", params=params))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/v1/jobs/{job_id}"))

    def status(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/status"))

    def stream(self, items: Iterable[Any], *, return_exceptions: bool = False) -> Iterator[Any]:
        """Send items over one WebSocket and yield their results in order.

        A failed item raises its error, or is yielded as the exception with ``return_exceptions``.
        """
        from websockets.sync.client import connect

        with _refusals(), connect(self._ws_url(), additional_headers=self._headers, max_size=None) as ws:
            outstanding = 0
            for item in items:
                ws.send(item if isinstance(item, bytes) else json.dumps(item))
                outstanding += 1
                if outstanding >= STREAM_WINDOW:
                    outstanding -= 1
                    yield _reply(ws.recv(), return_exceptions)
            for _ in range(outstanding):
                yield _reply(ws.recv(), return_exceptions)

    def stream_bytes(self, chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
        """Feed a byte-stream session (one whose graph's adapter streams raw bytes, see
        `parapipe.service.session`): send the chunks, then ``{"type": "end"}``; yield each message
        as it arrives, the last one being ``{"type": "final", ...}``."""
        from websockets.sync.client import connect

        with _refusals(), connect(self._ws_url(), additional_headers=self._headers, max_size=None) as ws:
            for chunk in chunks:
                ws.send(chunk)
                yield from _ready_messages(ws)
            ws.send(json.dumps({"type": "end"}))
            while (message := json.loads(ws.recv()))["type"] != "final":
                yield message
            yield message


class AsyncClient(_Base):
    """The same methods as `Client`, as coroutines (``stream`` and ``stream_bytes`` async iterate).

    Arguments as for `Client`; ``max_connections`` bounds the calls in flight at once (see the
    module docstring).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        super().__init__(url, api_key)
        transport = httpx.AsyncHTTPTransport(socket_options=NO_DELAY, limits=_limits(max_connections))
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            try:
                response = await self._http.request(method, path, **kwargs)
            except _DROPPED:
                if method != "GET":
                    raise
                response = await self._http.request(method, path, **kwargs)  # on a fresh connection
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc
        return _decode(response)

    async def run(self, item: Any = None, *, file: FileInput | None = None, filename: str | None = None) -> Any:
        return (await self._call("POST", "/v1/run", **_body(item, file, filename)))["result"]

    async def submit(self, item: Any = None, *, file: FileInput | None = None, filename: str | None = None) -> str:
        return str((await self._call("POST", "/v1/jobs", **_body(item, file, filename)))["id"])

    async def job(self, job_id: str, *, wait: float = 0.0) -> dict[str, Any]:
        return dict(await self._call("GET", f"/v1/jobs/{job_id}", params={"wait": wait}))

    async def result(self, job_id: str, *, wait: bool = True, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        view = await self.job(job_id)
        while wait and view["state"] in ("queued", "running") and _left(deadline) > 0:
            view = await self.job(job_id, wait=min(MAX_LONG_POLL, _left(deadline)))
        return _job_result(view)

    async def jobs(self, state: str | None = None, *, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        params = {"offset": offset, "limit": limit, **({"state": state} if state else {})}
        return dict(await self._call("GET", "/v1/jobs", params=params))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(await self._call("DELETE", f"/v1/jobs/{job_id}"))

    async def status(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/v1/status"))

    async def stream(
        self, items: Iterable[Any] | AsyncIterable[Any], *, return_exceptions: bool = False
    ) -> AsyncIterator[Any]:
        """Send items over one WebSocket and yield their results in order (see `Client.stream`)."""
        from websockets.asyncio.client import connect

        with _refusals():
            ws = await connect(self._ws_url(), additional_headers=self._headers, max_size=None)
        async with ws:
            outstanding = 0
            async for item in _aiter(items):
                await ws.send(item if isinstance(item, bytes) else json.dumps(item))
                outstanding += 1
                if outstanding >= STREAM_WINDOW:
                    outstanding -= 1
                    yield _reply(await ws.recv(), return_exceptions)
            for _ in range(outstanding):
                yield _reply(await ws.recv(), return_exceptions)

    async def stream_bytes(self, chunks: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[dict[str, Any]]:
        """Send the chunks while yielding messages as they arrive, up to ``final`` (see `Client.stream_bytes`)."""
        from websockets.asyncio.client import connect

        with _refusals():
            ws = await connect(self._ws_url(), additional_headers=self._headers, max_size=None)
        async with ws:

            async def send() -> None:
                async for chunk in _aiter(chunks):
                    await ws.send(chunk)
                await ws.send(json.dumps({"type": "end"}))

            sender = asyncio.create_task(send())
            try:
                while (message := json.loads(await ws.recv()))["type"] != "final":
                    yield message
                yield message
                await sender
            finally:
                sender.cancel()


_DROPPED = (httpx.ReadError, httpx.RemoteProtocolError)
"""A kept-alive connection the server closed as a request left on it (its idle timeout and our
reuse crossed): a GET, a read, goes once more on a fresh one; a POST may have run, so not."""


def _limits(max_connections: int) -> httpx.Limits:
    """Idle connections are dropped well before the server's keep-alive timeout closes them: with
    equal times (httpx's default is uvicorn's 5 s) the race `_DROPPED` covers came down to ms."""
    if max_connections < 1:
        raise ConfigError(f"max_connections must be >= 1, got {max_connections}")
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                        keepalive_expiry=KEEP_ALIVE_SECONDS / 2)  # fmt: skip


def _body(item: Any, file: FileInput | None, filename: str | None) -> dict[str, Any]:
    """httpx arguments for an item (JSON) or a file (multipart upload, read on this side)."""
    if file is None:
        return {"json": {"item": item}}
    if item is not None:
        raise ConfigError("give either an item or a file, not both")
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as fh:
            data = fh.read()
        filename = filename or os.path.basename(os.fspath(file))
    else:
        data = file if isinstance(file, bytes) else file.read()
    return {"files": {"file": (filename or "upload", data, "application/octet-stream")}}


def _decode(response: httpx.Response) -> Any:
    """The JSON body of a success, or the error it describes raised as its exception."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise ServiceError(f"HTTP {response.status_code}: {response.text[:200]}", status=response.status_code)
    retry = response.headers.get("retry-after")
    raise_for_error(response.status_code, error, float(retry) if retry and retry.isdigit() else None)


def _job_result(view: dict[str, Any]) -> Any:
    state = view["state"]
    if state == "done":
        return view.get("result")
    if state == "failed":
        raise_for_error(500, view.get("error") or {})
    if state == "cancelled":
        raise JobCancelled(f"job {view['id']} was cancelled")
    raise RequestTimeout(f"job {view['id']} is still {state}; call result() again or give a longer timeout")


def _reply(text: str | bytes, return_exceptions: bool) -> Any:
    reply = json.loads(text)
    if "error" not in reply:
        return reply["result"]
    error = error_from(500, reply["error"])
    if return_exceptions:
        return error
    raise error


def _ready_messages(ws: Any) -> Iterator[dict[str, Any]]:
    """Messages that already arrived, without waiting for more."""
    while True:
        try:
            yield json.loads(ws.recv(timeout=0))
        except TimeoutError:
            return


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _left(deadline: float | None) -> float:
    return MAX_LONG_POLL if deadline is None else max(0.0, deadline - time.monotonic())


def _unreachable(url: str, exc: Exception) -> Unreachable:
    return Unreachable(f"no answer from {url} ({type(exc).__name__}: {exc}); is `parapipe serve` running there?")


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A refused WebSocket handshake raises the error its HTTP answer describes (`Unauthorized`
    for a missing or wrong key, `NotReady`...), as a refused request does."""
    from websockets.exceptions import InvalidStatus

    try:
        yield
    except InvalidStatus as exc:
        response = exc.response
        try:
            error = json.loads(response.body or b"{}").get("error") or {}
        except ValueError:
            error = {}
        if not error and response.status_code == 403:
            error = {"type": "Forbidden", "message": "the server refused the WebSocket handshake"}
        retry = response.headers.get("Retry-After")
        raise error_from(response.status_code, error, float(retry) if retry and retry.isdigit() else None) from None
