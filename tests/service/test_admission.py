"""Admission control and cancellation, with items held in their stage by FIFO gates (no sleeping)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ._graphs import GATE_ENV
from .conftest import Gates, Server, start_server


@pytest.fixture
def gated(tmp_path: Path, gates: Gates) -> Iterator[Server]:
    env = {GATE_ENV: str(gates.root)}
    server = start_server("gated", tmp_path, "--max-queue", "3", "--drain-timeout", "5", env=env)
    yield server
    gates.release_all()
    server.stop()


def _job(http: httpx.Client, item: object) -> str:
    response = http.post("/v1/jobs", json={"item": item})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_a_full_queue_answers_429_and_drops_no_accepted_job(gated: Server, gates: Gates) -> None:
    with httpx.Client(base_url=gated.url, timeout=30) as http:
        accepted = [_job(http, gates.item(name)) for name in "abc"]
        refused_job = http.post("/v1/jobs", json={"item": 1})
        refused_run = http.post("/v1/run", json={"item": 1})
        for response in (refused_job, refused_run):
            assert response.status_code == 429
            assert response.json()["error"]["type"] == "Overloaded"
            assert int(response.headers["retry-after"]) >= 1
        assert http.get("/v1/status").json()["service"]["rejected"] == 2
        for name in "abc":
            gates.release(name)
        views = [http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json() for job_id in accepted]
        assert [v["state"] for v in views] == ["done"] * 3
        assert [v["result"]["released"]["gate"] for v in views] == ["a", "b", "c"]
        assert http.post("/v1/run", json={"item": "now"}).json() == {"result": {"released": "now"}}


def test_queued_and_running_jobs_can_be_cancelled(gated: Server, gates: Gates) -> None:
    with httpx.Client(base_url=gated.url, timeout=30) as http:
        first, second, third = (_job(http, gates.item(name)) for name in "abc")
        # every job goes to the engine at once: the second and third wait in the stage's queue
        assert http.delete(f"/v1/jobs/{third}").json()["state"] == "cancelled"
        assert http.delete(f"/v1/jobs/{second}").json()["state"] == "cancelled"
        assert http.delete(f"/v1/jobs/{second}").status_code == 409
        gates.release("a")  # the first job was in the stage all along
        assert http.get(f"/v1/jobs/{first}", params={"wait": 30}).json()["state"] == "done"
        status = http.get("/v1/status").json()
        assert (status["jobs"]["counts"]["done"], status["jobs"]["counts"]["cancelled"]) == (1, 2)
        assert status["service"]["inflight"] == 0


def test_a_long_poll_returns_the_current_state_when_time_runs_out(gated: Server, gates: Gates) -> None:
    with httpx.Client(base_url=gated.url, timeout=30) as http:
        job_id = _job(http, gates.item("a"))
        assert http.get(f"/v1/jobs/{job_id}", params={"wait": 0.2}).json()["state"] == "running"
        gates.release("a")
        assert http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()["state"] == "done"
