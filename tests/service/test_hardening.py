"""Issue 19: a few small requests must never wedge a stage, fill the queue for good, or exhaust
memory. Real servers on loopback; every request is a few kilobytes unless the issue named a size."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parapipe.service import Unauthorized
from parapipe.service.client import Client

from ._graphs import GATE_ENV
from .conftest import REPO, Gates, Server, start_server

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
ADMIN = "admin-0123456789abcdef"


def nest(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server("deep", tmp_path_factory.mktemp("deep"), "--max-queue", "8")
    yield server
    server.stop()


def _post(server: Server, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        server.url + path, content=body, headers={"content-type": "application/json", **headers}, timeout=30
    )


# -- item 1 and 2: nesting ---------------------------------------------------------------------


@pytest.mark.parametrize("depth", [65, 440, 494, 520, 5000])
def test_deep_json_is_refused_before_anything_is_queued_and_logs_no_traceback(deep: Server, depth: int) -> None:
    before = deep.log.stat().st_size
    body = b'{"item": ' + b"[" * depth + b"0" + b"]" * depth + b"}"  # ~1 KB at 500 levels
    for path in ("/v1/run", "/v1/jobs"):
        response = _post(deep, path, body)
        assert response.status_code == 422, response.text
        assert "nested deeper" in response.json()["error"]["message"]
    assert deep.log.stat().st_size - before < 1000  # one line at most per client error, no traceback
    assert _post(deep, "/v1/run", b'{"item": 1}').json() == {"result": 1}
    assert httpx.get(deep.url + "/readyz").status_code == 200


def test_deep_nan_jobs_never_hold_the_queue(deep: Server) -> None:
    body = json.dumps({"item": nest(440, float("nan"))}).encode()
    for _ in range(20):  # more than --max-queue: each would have held a slot for good
        assert _post(deep, "/v1/jobs", body).status_code == 422
    job = _post(deep, "/v1/jobs", b'{"item": 2}').json()["id"]
    assert httpx.get(f"{deep.url}/v1/jobs/{job}", params={"wait": 30}, timeout=40).json()["result"] == 2


def test_deep_text_frames_on_the_websocket_are_refused_in_place(deep: Server) -> None:
    with Client(deep.url) as client:
        replies = list(client.stream([nest(500), 3], return_exceptions=True))
    assert isinstance(replies[0], Exception) and "nested deeper" in str(replies[0])
    assert replies[1] == 3


# -- item 6: client input is a 4xx; a result without a JSON form is a stored, readable error --


def test_client_input_that_used_to_answer_500(deep: Server) -> None:
    assert _post(deep, "/v1/run", b'{"item": "\\ud800"}').status_code == 400  # a lone surrogate
    assert httpx.get(deep.url + "/v1/jobs", params={"offset": 2**63}).status_code == 422
    assert httpx.get(deep.url + "/v1/jobs", params={"offset": 2**62}).status_code == 200


def test_a_result_nested_300_deep_is_readable_and_one_too_deep_is_a_stored_error(deep: Server) -> None:
    assert _post(deep, "/v1/run", b'{"item": {"depth": 300}}').json()["result"] == nest(300)
    ok = _post(deep, "/v1/jobs", b'{"item": {"depth": 300}}').json()["id"]
    view = httpx.get(f"{deep.url}/v1/jobs/{ok}", params={"wait": 30}, timeout=40)
    assert view.status_code == 200 and view.json()["result"] == nest(300)
    bad = _post(deep, "/v1/jobs", b'{"item": {"depth": 3000}}').json()["id"]
    view = httpx.get(f"{deep.url}/v1/jobs/{bad}", params={"wait": 30}, timeout=40)
    assert view.status_code == 200 and view.json()["state"] == "failed", view.text
    assert httpx.get(deep.url + "/v1/jobs", params={"state": "failed"}).status_code == 200


def test_duplicate_host_headers_are_refused(deep: Server) -> None:
    port = int(deep.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")


# -- item 4: admission before reading, bytes in flight, per-connection caps ------------------


@pytest.fixture
def gated_small(tmp_path: Path, gates: Gates) -> Iterator[Server]:
    server = start_server(
        "gated", tmp_path, "--max-queue", "8", "--connection-items", "4", "--connection-bytes", str(2**20),
        "--max-body-bytes", str(2**20), "--max-inflight-bytes", str(2 * 2**20), "--drain-timeout", "1",
        env={GATE_ENV: str(gates.root)},
    )  # fmt: skip
    yield server
    gates.release_all()
    server.stop()


def _raw(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=30)


def _head(path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/octet-stream",
             f"Content-Length: {length}", *extra]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_full_queue_refuses_before_reading_the_body(gated_small: Server, gates: Gates) -> None:
    for n in range(8):
        item = gates.item(f"hold{n}")
        assert httpx.post(gated_small.url + "/v1/jobs", json={"item": item}).status_code == 202
    with _raw(gated_small) as sock:
        sock.sendall(_head("/v1/jobs", 2**20 - 1))  # the body never comes
        assert sock.recv(4096).startswith(b"HTTP/1.1 429")


def test_bodies_in_flight_are_bounded_in_bytes(gated_small: Server) -> None:
    held = [_raw(gated_small) for _ in range(2)]
    try:
        for sock in held:  # 100-continue: the server answers once it admitted the body and reads it
            sock.sendall(_head("/v1/run", 2**20 - 100, "Expect: 100-continue"))
            assert sock.recv(4096).startswith(b"HTTP/1.1 100")
        response = httpx.post(
            gated_small.url + "/v1/run", content=b"x" * 1000, headers={"content-type": "application/octet-stream"}
        )
        assert response.status_code == 429 and "Retry-After" in response.headers
    finally:
        for sock in held:
            sock.close()


def test_queued_jobs_hold_their_bytes_in_the_same_budget(gated_small: Server, gates: Gates) -> None:
    assert httpx.post(gated_small.url + "/v1/jobs", json={"item": gates.item("block")}).status_code == 202
    gates.entered("block")  # the one worker is busy: the jobs below wait in the queue, bodies and all
    octets = {"content-type": "application/octet-stream"}
    statuses = [
        httpx.post(gated_small.url + "/v1/jobs", content=b"x" * 900_000, headers=octets).status_code for _ in range(3)
    ]
    assert statuses == [202, 202, 429]  # --max-inflight-bytes is 2 MiB


def _inflight(server: Server) -> int:
    return int(httpx.get(server.url + "/v1/status").json()["service"]["inflight"])


def test_one_websocket_cannot_take_every_queue_slot(gated_small: Server, gates: Gates) -> None:
    from websockets.sync.client import connect

    items = [gates.item(f"ws{n}") for n in range(10)]
    with connect(gated_small.url.replace("http", "ws") + "/v1/stream") as ws:
        for item in items:
            ws.send(json.dumps(item))
        gates.entered("ws0")
        seen = max(_inflight(gated_small) for _ in range(50))
        assert seen <= 4
        accepted = [httpx.post(gated_small.url + "/v1/jobs", json={"item": n}).status_code for n in range(4)]
        assert accepted == [202] * 4


def test_a_websocket_that_sends_faster_than_it_is_answered_is_not_read_further(
    gated_small: Server, gates: Gates
) -> None:
    from websockets.sync.client import connect

    with connect(gated_small.url.replace("http", "ws") + "/v1/stream", max_size=None) as ws:
        ws.send(json.dumps(gates.item("first")))
        gates.entered("first")
        for _ in range(3):
            ws.send(b"x" * (2**19))  # queued behind the first: they hold memory until answered
        seen = max(_inflight(gated_small) for _ in range(50))
        assert seen <= 3  # the first and what fits in --connection-bytes (1 MiB)


# -- item 5: header size, slow heads, connection cap ------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        "echo", tmp_path_factory.mktemp("limited"), "--header-timeout", "1", "--max-connections", "6",
        "--api-key-file", str(_key_file(tmp_path_factory.mktemp("keys"), KEY_A, KEY_B)),
        "--admin-key-file", str(_key_file(tmp_path_factory.mktemp("admin"), ADMIN)), "--log-level", "info",
    )  # fmt: skip
    yield server
    server.stop()


def _key_file(root: Path, *keys: str) -> Path:
    path = root / "keys"
    path.write_text("# keys\n" + "\n".join(keys) + "\n")
    return path


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_an_oversized_header_is_refused_before_auth(limited: Server) -> None:
    with _raw(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        assert sock.recv(4096).startswith((b"HTTP/1.1 400", b"HTTP/1.1 431"))  # not the public route's 200


def test_a_head_over_max_header_bytes_is_refused(limited: Server) -> None:
    """Past ``--max-header-bytes`` (32 KiB) but under the HTTP parser's own ceiling, in one write."""
    with _raw(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 48_000 + b"\r\n\r\n")
        assert sock.recv(4096).startswith((b"HTTP/1.1 400", b"HTTP/1.1 431"))


def test_a_slow_request_head_is_cut_off(limited: Server) -> None:
    with _raw(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
        sock.settimeout(20)
        assert sock.recv(4096) == b""  # closed by the server after --header-timeout


def test_connections_past_the_cap_are_closed(limited: Server) -> None:
    socks = [_raw(limited) for _ in range(10)]
    try:
        closed = 0
        for sock in socks:
            sock.settimeout(20)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try:
                closed += sock.recv(4096) == b""
            except ConnectionResetError:
                closed += 1
        assert closed >= 4
    finally:
        for sock in socks:
            sock.close()


# -- item 8: the smaller ones ------------------------------------------------------------------


def test_a_key_in_a_query_string_stays_out_of_the_access_log(limited: Server) -> None:
    httpx.get(limited.url + "/v1/status", params={"api_key": KEY_A, "x": "1"}, headers=_auth(KEY_A))
    assert httpx.get(limited.url + "/healthz").status_code == 200
    text = limited.log_text()
    assert "/v1/status?api_key=***" in text
    assert KEY_A not in text


def test_the_client_raises_unauthorized_for_a_refused_handshake(limited: Server) -> None:
    with Client(limited.url) as client, pytest.raises(Unauthorized):
        list(client.stream([1]))
    with Client(limited.url, api_key=KEY_B) as client:
        assert list(client.stream([1])) == [1]


def test_short_keys_and_keys_on_the_command_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "parapipe.service", "tests.service._graphs:echo", "--api-key", "short"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "at least 16 characters" in done.stderr
    server = start_server("echo", tmp_path, "--api-key", KEY_A)
    try:
        assert "--api-key shows the key" in server.log_text()
    finally:
        server.stop()


def test_error_messages_show_no_server_paths(tmp_path: Path) -> None:
    server = start_server("broken", tmp_path, wait_ready=False)
    try:
        body = httpx.get(server.url + "/readyz", params={"wait": 60}, timeout=90).text
        assert "the model file is missing" in body
        assert str(REPO) not in body and "/site-packages/" not in body
    finally:
        server.stop()


# -- item 9: jobs belong to their key ------------------------------------------------------------


def test_jobs_belong_to_the_key_that_submitted_them(limited: Server) -> None:
    job = httpx.post(limited.url + "/v1/jobs", json={"item": 5}, headers=_auth(KEY_A)).json()["id"]
    mine = httpx.get(f"{limited.url}/v1/jobs/{job}", params={"wait": 30}, headers=_auth(KEY_A), timeout=40)
    assert mine.json()["result"] == 5
    assert httpx.get(f"{limited.url}/v1/jobs/{job}", headers=_auth(KEY_B)).status_code == 404
    assert httpx.delete(f"{limited.url}/v1/jobs/{job}", headers=_auth(KEY_B)).status_code == 404
    assert job not in [j["id"] for j in httpx.get(limited.url + "/v1/jobs", headers=_auth(KEY_B)).json()["jobs"]]
    assert job in [j["id"] for j in httpx.get(limited.url + "/v1/jobs", headers=_auth(KEY_A)).json()["jobs"]]
    assert httpx.get(f"{limited.url}/v1/jobs/{job}", headers=_auth(ADMIN)).status_code == 200
    recent = {
        key: httpx.get(limited.url + "/v1/status", headers=_auth(key)).json()["jobs"]["recent"]
        for key in (KEY_A, KEY_B)
    }
    assert job in [j["id"] for j in recent[KEY_A]] and job not in [j["id"] for j in recent[KEY_B]]
    assert job in [j["id"] for j in httpx.get(limited.url + "/v1/jobs", headers=_auth(ADMIN)).json()["jobs"]]


# -- item 7: the journal ---------------------------------------------------------------------------


def test_the_journal_is_private_and_pruned(tmp_path: Path) -> None:
    journal = tmp_path / "jobs.db"
    args = ("--journal", str(journal), "--max-body-bytes", str(17 * 2**20))
    server = start_server("echo", tmp_path, *args)
    try:
        ids = []
        for n in range(10):  # 16 MiB payloads, kept until pruned
            body = bytes([n]) * (16 * 2**20)
            response = httpx.post(
                server.url + "/v1/jobs", content=body, headers={"content-type": "application/octet-stream"}, timeout=60
            )
            ids.append(response.json()["id"])
        for job in ids:
            httpx.get(f"{server.url}/v1/jobs/{job}", params={"wait": 30}, timeout=40)
    finally:
        server.stop()
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o600
    server = start_server("echo", tmp_path, *args)  # a start prunes: payloads of finished jobs go
    try:
        assert httpx.get(f"{server.url}/v1/jobs/{ids[0]}").json()["state"] == "done"
    finally:
        server.stop()
    assert journal.stat().st_size < 4 * 2**20
    server = start_server("echo", tmp_path, *args, "--job-ttl", "0")  # and jobs older than the TTL
    try:
        assert httpx.get(f"{server.url}/v1/jobs/{ids[0]}").status_code == 404
    finally:
        server.stop()


def test_a_body_refused_unread_is_no_request_head(limited: Server) -> None:
    """A request refused before its body is read (here 401, no key): the body that still
    arrives is a body, however long, not a head over --max-header-bytes, and the connection
    serves its next request."""
    body = b"x" * 200_000  # several times --max-header-bytes
    with _raw(limited) as sock:
        sock.sendall(_head("/v1/run", len(body)) + body + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 ") < 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 401") and b"431" not in data
    assert b"HTTP/1.1 200" in data, data  # the request after the refused body was served


def test_a_long_poll_outlasts_the_header_timeout(tmp_path: Path, gates: Gates) -> None:
    """--header-timeout bounds the wait for a request head, not the app's answer: a job's long
    poll (the server waits 2 s for it, twice the limit) is answered on its connection."""
    server = start_server("gated", tmp_path, "--header-timeout", "1", env={GATE_ENV: str(gates.root)})
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            job = client.post("/v1/jobs", json={"item": gates.item("held")})
            assert job.status_code == 202
            polled = client.get(f"/v1/jobs/{job.json()['id']}", params={"wait": 2})
            assert polled.status_code == 200 and polled.json()["state"] in ("queued", "running")
            gates.release("held")
    finally:
        gates.release_all()
        server.stop()
