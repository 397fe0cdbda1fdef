"""A server SIGKILLed with a job in a stage loses nothing: the next server on the same journal
runs the job again and completes it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import psutil

from ._graphs import GATE_ENV
from .conftest import Gates, start_server


def test_a_job_survives_sigkill_of_the_server(tmp_path: Path, gates: Gates) -> None:
    journal = tmp_path / "jobs.db"
    first = start_server("gated", tmp_path, f"--journal={journal}", env={GATE_ENV: str(gates.root)})
    with httpx.Client(base_url=first.url, timeout=30) as http:
        job_id = http.post("/v1/jobs", json={"item": gates.item("a")}).json()["id"]
        queued_id = http.post("/v1/jobs", json={"item": "later"}).json()["id"]
        workers = [w["pid"] for s in http.get("/v1/status").json()["stages"] for w in s["workers"]]
    opener = gates.entered("a")  # returns once the job is inside the stage
    os.kill(first.proc.pid, signal.SIGKILL)
    assert first.proc.wait(timeout=30) == -signal.SIGKILL
    os.close(opener)
    _, alive = psutil.wait_procs([psutil.Process(pid) for pid in workers if psutil.pid_exists(pid)], timeout=30)
    assert not alive, "workers must exit when their server dies"

    second = start_server("gated", tmp_path, f"--journal={journal}")  # no gate: the rerun passes
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            view = http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
            assert (view["state"], view["result"]) == ("done", {"released": {"gate": "a"}})
            assert view["attempts"] == 2  # the first attempt died with the server
            assert http.get(f"/v1/jobs/{queued_id}", params={"wait": 30}).json()["state"] == "done"
    finally:
        second.stop()
