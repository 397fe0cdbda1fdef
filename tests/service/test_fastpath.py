"""`FastRun` (``POST /v1/run`` in front of FastAPI) answers exactly as the FastAPI route does.

One in-process app over a started engine; each request goes once through the app (the fast path
where it applies) and once through ``FastAPI.__call__`` (the full stack it bypasses), and the two
answers must agree: status, JSON body and the headers a client acts on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed: pip install -e '.[service]'")

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

import parapipe as pp
from parapipe.service import RequestTimeout, ServiceConfig
from parapipe.service.app import ServiceApp, app_for
from parapipe.service.bridge import ResultBridge
from parapipe.service.runtime import Service
from tests.service._graphs import describe

KEY = "fast-0123456789abcdef"
MAX_BODY = 2000
AUTH = (b"authorization", f"Bearer {KEY}".encode())
HOST = (b"host", b"127.0.0.1:8000")
JSON = (b"content-type", b"application/json")
ACTED_ON = ("content-type", "retry-after", "www-authenticate", "connection")

Answer = tuple[int, dict[str, str], bytes]


class Served:
    """An app and its started service, on an event loop in a thread of its own."""

    def __init__(self) -> None:
        config = ServiceConfig(
            api_keys=(KEY,),
            allowed_hosts=("127.0.0.1:8000",),
            journal_path=":memory:",
            max_body_bytes=MAX_BODY,
            max_queue=4,
        )
        self.service = Service(pp.stage(describe, replicas=1), config)
        self.app = app_for(self.service)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self._open())

    async def _open(self) -> None:
        await self.service.open()
        await self.service.wait_started(120)
        assert self.service.state == "ready", self.service.failure

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def both(self, headers: list[tuple[bytes, bytes]], *chunks: bytes) -> tuple[Answer, Answer]:
        """The answer of the app, then that of FastAPI's full stack, to the same request."""

        async def full(scope: Scope, receive: Receive, send: Send) -> None:
            await FastAPI.__call__(self.app, scope, receive, send)

        return self.run(call(self.app, headers, chunks)), self.run(call(full, headers, chunks))

    def close(self) -> None:
        self.run(self.service.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


async def call(app: Any, headers: list[tuple[bytes, bytes]], chunks: tuple[bytes, ...]) -> Answer:
    """One ``POST /v1/run`` through an ASGI app; the body arrives in ``chunks``."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/run", "raw_path": b"/v1/run", "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}  # fmt: skip
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    pending = pending or [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[Message] = []
    finished = asyncio.Event()

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    finished.set()
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    heads = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], heads, body


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    served = Served()
    try:
        yield served
    finally:
        served.close()


def _length(body: bytes) -> tuple[bytes, bytes]:
    return (b"content-length", str(len(body)).encode())


def _post(body: bytes, *extra: tuple[bytes, bytes], auth: bool = True) -> list[tuple[bytes, bytes]]:
    return [HOST, JSON, _length(body), *([AUTH] if auth else []), *extra]


DEEP = b'{"item": ' + b"[" * 300 + b"]" * 300 + b"}"
CASES: dict[str, tuple[list[tuple[bytes, bytes]], tuple[bytes, ...], int]] = {
    "a result": (_post(b'{"item": {"n": 1}}'), (b'{"item": {"n": 1}}',), 200),
    "no key": (_post(b'{"item": 1}', auth=False), (b'{"item": 1}',), 401),
    "a wrong key": (_post(b'{"item": 1}', (b"authorization", b"Bearer nope"), auth=False), (b'{"item": 1}',), 401),
    "a declared body over the limit": (_post(b"x" * (MAX_BODY + 1)), (b"x" * (MAX_BODY + 1),), 413),
    "a chunked body over the limit": ([HOST, JSON, AUTH], (b"x" * MAX_BODY, b"x"), 413),
    "a Content-Length that is no number": ([HOST, JSON, AUTH, (b"content-length", b"ten")], (b"",), 400),
    "malformed JSON": (_post(b'{"item": '), (b'{"item": ',), 400),
    "another JSON shape": (_post(b'{"items": 1}'), (b'{"items": 1}',), 422),
    "JSON nested too deep": (_post(DEEP), (DEEP,), 422),
    "an item error": (_post(b'{"item": "boom"}'), (b'{"item": "boom"}',), 422),
    "a foreign origin": (_post(b'{"item": 1}', (b"origin", b"http://evil.example")), (b'{"item": 1}',), 403),
    "a foreign host": ([(b"host", b"evil.example"), JSON, AUTH, _length(b"{}")], (b"{}",), 403),
    "two Host headers": ([HOST, HOST, JSON, AUTH, _length(b"{}")], (b"{}",), 400),
    "an upload (not the fast path)": ([HOST, (b"content-type", b"application/octet-stream"), AUTH], (b"abc",), 200),
}


@pytest.mark.parametrize("case", CASES)
def test_the_fast_path_answers_as_the_fastapi_route(served: Served, case: str) -> None:
    headers, chunks, status = CASES[case]
    fast, full = served.both(headers, *chunks)
    assert fast[0] == full[0] == status, (fast, full)
    assert fast[2] == full[2]  # the same JSON, byte for byte
    assert {k: fast[1].get(k) for k in ACTED_ON} == {k: full[1].get(k) for k in ACTED_ON}


def test_a_full_queue_and_a_full_byte_budget_are_429_with_retry_after(served: Served) -> None:
    service = served.service
    body = b'{"item": 1}'
    answers = []
    for counter, used, limit in ((service.admission, "inflight", "limit"), (service.body_bytes, "used", "limit")):
        full_by = getattr(counter, limit)
        setattr(counter, used, getattr(counter, used) + full_by)
        try:
            answers.append(served.both(_post(body), body))
        finally:
            setattr(counter, used, getattr(counter, used) - full_by)
    for fast, full in answers:
        assert fast[0] == full[0] == 429 and fast[2] == full[2]
        assert fast[1]["retry-after"] == full[1]["retry-after"]
    fast, _ = answers[1]
    assert fast[1]["retry-after"] == "1" and fast[1]["connection"] == "close"
    assert service.admission.inflight == 0 and service.body_bytes.used == 0  # nothing leaked by either path


def test_an_engine_that_is_not_ready_is_503(served: Served) -> None:
    service = served.service
    service.state = "stopping"
    try:
        fast, full = served.both(_post(b'{"item": 1}'), b'{"item": 1}')
    finally:
        service.state = "ready"
    assert fast[0] == full[0] == 503 and fast[2] == full[2] and fast[1]["retry-after"] == full[1]["retry-after"]


def test_a_json_run_does_not_enter_fastapi(served: Served) -> None:
    """Fails without the fast path: FastAPI's stack is replaced by one that refuses everything."""
    app = served.app
    assert isinstance(app, ServiceApp)

    async def refused(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError(f"FastAPI's stack was entered for {scope['method']} {scope['path']}")

    kept, app.middleware_stack = app.middleware_stack, refused
    try:
        answer = served.run(call(app, _post(b'{"item": 2}'), (b'{"item": 2}',)))
        with pytest.raises(AssertionError, match="stack was entered"):
            served.run(call(app, [HOST, (b"content-type", b"application/octet-stream"), AUTH], (b"abc",)))
    finally:
        app.middleware_stack = kept
    assert answer[0] == 200 and answer[2] == b'{"result":{"item":2}}'


def test_a_burst_of_results_wakes_the_loop_once() -> None:
    """Results one reader thread resolves back to back reach their waiters in one drain."""
    loop = asyncio.new_event_loop()
    try:
        bridge = ResultBridge(loop)
        wakeups: list[object] = []
        schedule = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any) -> Any:
            wakeups.append(callback)
            return schedule(callback, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        futures: list[concurrent.futures.Future[int]] = [concurrent.futures.Future() for _ in range(5)]
        waiters = [bridge.watch(f) for f in futures]
        failed = concurrent.futures.Future[int]()
        waiters.append(bridge.watch(failed))

        def resolve() -> None:
            for i, f in enumerate(futures):
                f.set_result(i)
            failed.set_exception(ValueError("item failed"))

        resolver = threading.Thread(target=resolve)
        resolver.start()
        resolver.join()
        results = loop.run_until_complete(asyncio.gather(*waiters, return_exceptions=True))
        assert results[:5] == [0, 1, 2, 3, 4] and isinstance(results[5], ValueError)
        assert len(wakeups) == 1
    finally:
        loop.close()


def test_a_run_that_times_out_cancels_its_item() -> None:
    service = Service(describe, ServiceConfig(journal_path=":memory:"))
    never: concurrent.futures.Future[Any] = concurrent.futures.Future()

    async def wait() -> None:
        await service._result(never, 0.01)

    with pytest.raises(RequestTimeout, match=r"no result within 0\.01 s"):
        asyncio.run(wait())
    assert never.cancelled()
