"""``WS /v1/stream`` for item graphs: results in order, errors in the item's place."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.sync.client import connect

import parapipe as pp
from parapipe.service.client import AsyncClient, Client

from .conftest import Server


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
