"""Property-based fuzz of the API (issue 19): schemathesis over /openapi.json (no server error,
responses as the schema says) and random WebSocket frames; the server stays ready throughout.

Bounded: about 40 examples per operation (a few hundred in all) and 60 WebSocket sessions,
against one loopback server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the dev extra is not installed: pip install -e '.[dev]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error, response_schema_conformance  # noqa: E402

from .conftest import Server, start_server  # noqa: E402

_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server("pipeline", tmp_path_factory.mktemp("fuzz"), "--max-body-bytes", str(64 * 1024))
    yield server
    assert httpx.get(server.url + "/readyz").status_code == 200  # nothing above wedged it
    server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed: Server) -> Any:
    schema = schemathesis.openapi.from_url(fuzzed.url + "/openapi.json")
    schema.config.base_url = fuzzed.url
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@_SETTINGS
def test_the_http_api_never_answers_a_server_error(case: Any, fuzzed: Server) -> None:
    if "wait" in (case.query or {}):
        case.query["wait"] = 0  # a long poll (a job's end, a newer history sample) only costs time
    case.call_and_validate(base_url=fuzzed.url, checks=[not_a_server_error, response_schema_conformance], timeout=30)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_frames = st.lists(
    st.one_of(
        _json.map(json.dumps),  # an item
        st.text(max_size=200),  # mostly not JSON
        st.binary(max_size=2000),  # bytes items
        st.integers(1, 300).map(lambda depth: "[" * depth + "]" * depth),  # deep nesting
    ),
    min_size=1,
    max_size=8,
)


@given(frames=_frames)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_random_websocket_frames_get_one_reply_each_and_no_server_error(fuzzed: Server, frames: list[Any]) -> None:
    from websockets.sync.client import connect

    with connect(fuzzed.url.replace("http", "ws") + "/v1/stream", max_size=None) as ws:
        for frame in frames:
            ws.send(frame)
        for _ in frames:
            reply = json.loads(ws.recv(timeout=30))
            assert set(reply) in ({"result"}, {"error"}), reply
            if "error" in reply:
                assert reply["error"]["type"] in {"BadRequest", "StageError"}, reply
