"""API keys: 401 without one, 200 with one; keys from the flag and from PARAPIPE_API_KEYS; the
refusal to listen beyond loopback without a key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from parapipe.service import Unauthorized
from parapipe.service.client import Client

from .conftest import REPO, Server, start_server

FLAG_KEY = "flag-key-0123456789"
ENV_KEYS = "env-key-1-0123456789, env-key-2-0123456789"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("keyed")
    server = start_server("echo", tmp, "--api-key", FLAG_KEY, env={"PARAPIPE_API_KEYS": ENV_KEYS})
    yield server
    server.stop()


@pytest.mark.parametrize("path", ["/v1/status", "/v1/jobs", "/metrics"])
def test_protected_routes_need_a_key(keyed_server: Server, path: str) -> None:
    response = httpx.get(keyed_server.url + path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "Unauthorized"


@pytest.mark.parametrize("header", ["Bearer wrong", "Basic ZmxhZy1rZXk=", "Bearer", FLAG_KEY, f"Bearer {FLAG_KEY}x"])
def test_a_wrong_key_or_scheme_is_refused(keyed_server: Server, header: str) -> None:
    response = httpx.post(keyed_server.url + "/v1/run", json={"item": 1}, headers={"Authorization": header})
    assert response.status_code == 401


@pytest.mark.parametrize("key", [FLAG_KEY, "env-key-1-0123456789", "env-key-2-0123456789"])
def test_every_configured_key_is_accepted(keyed_server: Server, key: str) -> None:
    response = httpx.post(keyed_server.url + "/v1/run", json={"item": 7}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.json() == {"result": 7}


def test_health_and_dashboard_stay_public(keyed_server: Server) -> None:
    assert httpx.get(keyed_server.url + "/healthz").status_code == 200
    assert httpx.get(keyed_server.url + "/readyz").status_code == 200
    assert "parapipe" in httpx.get(keyed_server.url + "/").text


def test_the_client_sends_its_key(keyed_server: Server) -> None:
    with Client(keyed_server.url, api_key="env-key-2-0123456789") as client:
        assert client.run([1]) == [1]
        assert list(client.stream([1, 2])) == [1, 2]
    with Client(keyed_server.url) as client, pytest.raises(Unauthorized):
        client.run(1)


def test_the_websocket_needs_a_key(keyed_server: Server) -> None:
    url = keyed_server.url.replace("http", "ws") + "/v1/stream"
    with pytest.raises(InvalidStatus) as info, connect(url):
        pass
    assert info.value.response.status_code == 401


def test_serving_beyond_loopback_without_a_key_is_refused(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "parapipe.service", "tests.service._graphs:echo", "--host", "0.0.0.0"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "refusing to listen on '0.0.0.0' without an API key" in done.stderr
    assert "PARAPIPE_API_KEYS" in done.stderr
