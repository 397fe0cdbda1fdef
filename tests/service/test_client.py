"""`Client` and `AsyncClient` against a real server: results, jobs, errors raised as their types."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import httpx
import pytest

import parapipe as pp
from parapipe.service import BadRequest, JobNotFound, Unreachable
from parapipe.service.client import AsyncClient, Client

from ._graphs import PROBE_BATCH
from .conftest import Server, start_server


def test_run_submit_and_result(pipeline_server: Server) -> None:
    with Client(pipeline_server.url) as client:
        assert client.run({"a": 1}) == {"size": 8, "kind": "dict"}
        job_id = client.submit([1, 2])
        assert client.result(job_id, timeout=30) == {"size": 6, "kind": "list"}
        assert client.job(job_id)["state"] == "done"
        assert any(job["id"] == job_id for job in client.jobs("done", limit=1000)["jobs"])


def test_a_local_file_is_read_by_the_client_and_uploaded(pipeline_server: Server, tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"0123456789")
    with Client(pipeline_server.url) as client:
        assert client.run(file=path) == {"size": 10, "kind": "bytes"}
        assert client.run(file=b"abc") == {"size": 3, "kind": "bytes"}
        assert client.result(client.submit(file=path.open("rb")), timeout=30) == {"size": 10, "kind": "bytes"}


def test_errors_come_back_as_their_own_types(pipeline_server: Server) -> None:
    with Client(pipeline_server.url) as client:
        with pytest.raises(pp.StageError) as info:
            client.run("boom")
        assert (info.value.stage, info.value.exc_type) == ("describe", "ValueError")
        with pytest.raises(pp.StageError):
            client.result(client.submit("boom"), timeout=30)
        with pytest.raises(JobNotFound):
            client.result("nope")
        with pytest.raises(pp.ConfigError):
            client.run(1, file=b"x")
        with pytest.raises(BadRequest, match="exactly one key"):
            client._call("POST", "/v1/run", json={"items": 1})


def test_an_unreachable_server_is_a_clear_error() -> None:
    with Client("http://127.0.0.1:9", timeout=5) as client, pytest.raises(Unreachable, match="parapipe serve"):
        client.run(1)


def test_the_async_client_has_the_same_methods(pipeline_server: Server) -> None:
    async def scenario() -> None:
        async with AsyncClient(pipeline_server.url) as client:
            results = await asyncio.gather(*(client.run(n) for n in range(10)))
            assert results == [{"size": len(str(n)), "kind": "int"} for n in range(10)]
            job_id = await client.submit("abc")
            assert await client.result(job_id, timeout=30) == {"size": 5, "kind": "str"}
            with pytest.raises(pp.StageError):
                await client.run("boom")
            assert (await client.status())["service"]["ready"] is True

    asyncio.run(scenario())


def test_one_async_client_keeps_every_concurrent_call_in_flight(tmp_path: Path) -> None:
    """150 calls at once reach the server at once: the probe stage answers only when it holds all
    of them in one batch (else a partial batch waits 30 s). httpx alone would stop at 100."""
    server = start_server("probe", tmp_path)

    async def scenario() -> list[int]:
        async with AsyncClient(server.url) as client:
            return list(await asyncio.gather(*(client.run(n) for n in range(PROBE_BATCH))))

    try:
        assert asyncio.run(scenario()) == [PROBE_BATCH] * PROBE_BATCH
    finally:
        server.stop()


def test_a_client_leaves_room_for_other_clients_under_the_server_cap(pipeline_server: Server) -> None:
    """48 connections of other clients are open; 300 concurrent calls of one more client all get
    answers (a client that opened as many connections as the server accepts had its last ones
    closed unanswered)."""
    address = httpx.URL(pipeline_server.url)
    others = [socket.create_connection((address.host, address.port)) for _ in range(48)]

    async def scenario() -> list[object]:
        async with AsyncClient(pipeline_server.url) as client:
            return list(await asyncio.gather(*(client.run(n) for n in range(300))))

    try:
        assert asyncio.run(scenario()) == [{"size": len(str(n)), "kind": "int"} for n in range(300)]
    finally:
        for sock in others:
            sock.close()


def test_a_connection_limit_below_one_is_refused() -> None:
    with pytest.raises(pp.ConfigError, match="max_connections"):
        AsyncClient(max_connections=0)


class _DroppingServer:
    """A real HTTP server that answers the first request of each connection and keeps it alive,
    then closes it when the next request arrives, unanswered: what a server's keep-alive
    timeout does to a client that reuses the connection at that very moment."""

    BODY = b'{"id": "j", "state": "done", "result": 1}'

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by the test
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), b"0"))  # fmt: skip
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(self.BODY), self.BODY))  # fmt: skip
            conn.recv(65536)  # the next request on this connection: close it unanswered


def test_a_read_sent_on_a_connection_the_server_just_closed_goes_again_and_a_write_does_not() -> None:
    server = _DroppingServer()
    try:
        with Client(server.url) as client:
            assert client.job("j")["state"] == "done"
            assert client.job("j")["state"] == "done", "sent again on a fresh connection"
            assert server.connections == 2
            with pytest.raises(Unreachable):
                client.submit(1)  # the POST found the second connection dropped: it may have run

        async def calls() -> None:
            async with AsyncClient(server.url) as client:
                assert (await client.job("j"))["state"] == "done"
                assert await client.result("j") == 1
                with pytest.raises(Unreachable):
                    await client.submit(1)

        asyncio.run(calls())
    finally:
        server.sock.close()
