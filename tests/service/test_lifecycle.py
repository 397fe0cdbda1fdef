"""Start-up: the server answers while models load, queues jobs, and stops if a setup() fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from ._graphs import GATE_ENV
from .conftest import REPO, Gates, start_server


def test_a_stage_that_cannot_set_up_stops_the_server_with_its_error() -> None:
    command = [
        sys.executable,
        "-m",
        "parapipe.service",
        "tests.service._graphs:broken",
        "--port",
        "0",
        "--journal",
        ":memory:",
        "--log-level",
        "warning",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=110)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()
    assert any(line.startswith("parapipe serve: stage 'broken'") for line in last)
    assert "the model file is missing" in done.stderr


def test_while_models_load_jobs_are_queued_and_runs_are_refused(tmp_path: Path, gates: Gates) -> None:
    gates.item("setup")
    server = start_server("loading", tmp_path, env={GATE_ENV: str(gates.root)}, wait_ready=False)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/healthz").json() == {"status": "ok", "state": "starting"}
            assert http.get("/readyz").status_code == 503
            refused = http.post("/v1/run", json={"item": 1})
            assert refused.status_code == 503 and refused.json()["error"]["type"] == "NotReady"
            assert int(refused.headers["retry-after"]) >= 1
            job_id = http.post("/v1/jobs", json={"item": "early"}).json()["id"]
            assert http.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
            gates.release("setup")
            assert http.get("/readyz", params={"wait": 30}).json()["ready"] is True
            view = http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
            assert (view["state"], view["result"]) == ("done", "early")
    finally:
        server.stop()
