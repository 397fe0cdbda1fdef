"""``WS /v1/stream`` for item graphs: results in order, errors in the item's place."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from websockets.sync.client import connect

import parapipe as pp
from parapipe.service.client import AsyncClient, Client
from parapipe.service.config import STREAM_WINDOW

from ._graphs import GATE_ENV
from .conftest import Gates, Server, start_server


def test_results_come_back_in_order(pipeline_server: Server) -> None:
    items = list(range(100))
    with Client(pipeline_server.url) as client:
        results = list(client.stream(items))
    assert results == [{"size": len(str(n)), "kind": "int"} for n in items]


def test_a_failed_item_does_not_end_the_stream(pipeline_server: Server) -> None:
    with Client(pipeline_server.url) as client:
        results = list(client.stream([1, "boom", 2], return_exceptions=True))
        assert results[0] == {"size": 1, "kind": "int"} and results[2] == {"size": 1, "kind": "int"}
        assert isinstance(results[1], pp.StageError)
        with pytest.raises(pp.StageError):
            list(client.stream(["boom"]))


def test_binary_frames_are_bytes_items_and_bad_json_is_reported(pipeline_server: Server) -> None:
    with connect(pipeline_server.url.replace("http", "ws") + "/v1/stream") as ws:
        ws.send(b"\x00\x01")
        ws.send("{not json")
        ws.send(json.dumps("ok"))
        replies = [json.loads(ws.recv(timeout=30)) for _ in range(3)]
    assert replies[0] == {"result": {"size": 2, "kind": "bytes"}}
    assert replies[1]["error"]["type"] == "BadRequest"
    assert replies[2] == {"result": {"size": 4, "kind": "str"}}


def test_the_async_stream(pipeline_server: Server) -> None:
    async def items():
        for n in range(50):
            yield n

    async def scenario() -> list:
        async with AsyncClient(pipeline_server.url) as client:
            return [r async for r in client.stream(items())]

    assert asyncio.run(scenario()) == [{"size": len(str(n)), "kind": "int"} for n in range(50)]


def test_a_client_stream_fills_the_servers_window(tmp_path: Path, gates: Gates) -> None:
    """The first item is held in its stage, so no reply can come back: the client must still send
    the whole window (64, what the server runs per connection) before it waits for one."""
    server = start_server("gated", tmp_path, env={GATE_ENV: str(gates.root)})
    window_sent = threading.Event()

    def items() -> Iterator[object]:
        yield gates.item("first")
        for n in range(1, STREAM_WINDOW):
            if n == STREAM_WINDOW - 1:
                window_sent.set()  # asked for the last item of the window without any reply yet
            yield n

    try:
        with Client(server.url) as client, ThreadPoolExecutor(1) as pool:
            results = pool.submit(lambda: list(client.stream(items())))
            try:
                filled = window_sent.wait(timeout=30)
            finally:
                gates.release("first")  # else a failing client never returns from the stream
            assert filled, "the client waited for a reply before filling the window"
            assert results.result(timeout=30) == [{"released": {"gate": "first"}}] + [
                {"released": n} for n in range(1, STREAM_WINDOW)
            ]
    finally:
        server.stop()
