"""The HTTP API of a real server: runs, jobs, health, docs, and a clean 4xx for every bad request."""

from __future__ import annotations

import httpx
import pytest

from .conftest import Server


@pytest.fixture
def http(pipeline_server: Server) -> httpx.Client:
    with httpx.Client(base_url=pipeline_server.url, timeout=30) as client:
        yield client


def test_run_answers_with_the_result(http: httpx.Client) -> None:
    response = http.post("/v1/run", json={"item": {"words": ["a", "b"]}})
    assert response.status_code == 200
    assert response.json() == {"result": {"size": 21, "kind": "dict"}}


def test_run_takes_an_upload_or_raw_bytes_as_the_item(http: httpx.Client) -> None:
    upload = http.post("/v1/run", files={"file": ("notes.bin", b"\x00\x01\x02", "application/octet-stream")})
    raw = http.post("/v1/run", content=b"12345", headers={"Content-Type": "application/octet-stream"})
    assert upload.json() == {"result": {"size": 3, "kind": "bytes"}}
    assert raw.json() == {"result": {"size": 5, "kind": "bytes"}}


def test_an_item_error_is_422_with_the_stage_error_and_no_traceback(http: httpx.Client) -> None:
    response = http.post("/v1/run", json={"item": "boom"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "StageError"
    assert (error["stage"], error["exc_type"]) == ("describe", "ValueError")
    assert error["message"] == "boom is not a valid item"
    assert "traceback" not in error


def test_a_job_is_accepted_then_done_with_timings(http: httpx.Client) -> None:
    accepted = http.post("/v1/jobs", json={"item": [1, 2, 3]})
    assert accepted.status_code == 202
    job_id = accepted.json()["id"]
    assert accepted.headers["location"] == f"/v1/jobs/{job_id}"
    view = http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
    assert view["state"] == "done"
    assert view["result"] == {"size": 9, "kind": "list"}
    assert view["attempts"] == 1
    timings = view["timings"]
    assert timings["created"] <= timings["started"] <= timings["finished"]
    assert timings["run_s"] >= 0


def test_a_failed_job_keeps_its_error(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"item": "boom"}).json()["id"]
    view = http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
    assert view["state"] == "failed"
    assert view["error"]["type"] == "StageError"
    assert "result" not in view


def test_jobs_are_listed_by_page_and_state(http: httpx.Client) -> None:
    ids = [http.post("/v1/jobs", json={"item": n}).json()["id"] for n in range(5)]
    for job_id in ids:
        assert http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()["state"] == "done"
    done = http.get("/v1/jobs", params={"state": "done", "limit": 1000}).json()
    listed = [job["id"] for job in done["jobs"]]
    assert listed[-5:] == ids
    assert done["total"] == len(listed)
    page = http.get("/v1/jobs", params={"state": "done", "offset": done["total"] - 3, "limit": 2}).json()
    assert [job["id"] for job in page["jobs"]] == ids[2:4]
    assert all("result" not in job for job in page["jobs"])


def test_cancelling_a_finished_job_is_a_conflict(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"item": 1}).json()["id"]
    http.get(f"/v1/jobs/{job_id}", params={"wait": 30})
    response = http.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "JobConflict"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "kind"),
    [
        ("POST", "/v1/run", {"content": b"{bad", "headers": {"Content-Type": "application/json"}}, 400, "BadRequest"),
        ("POST", "/v1/run", {"json": {"items": 1}}, 422, "BadRequest"),
        ("POST", "/v1/run", {"json": [1, 2]}, 422, "BadRequest"),
        ("POST", "/v1/run", {"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "BadRequest"),
        ("POST", "/v1/run", {"content": b"x"}, 415, "BadRequest"),
        ("POST", "/v1/jobs", {"files": {"other": ("a", b"x")}}, 422, "BadRequest"),
        ("POST", "/v1/jobs", {"json": {"item": "x" * 70_000}}, 413, "BadRequest"),
        ("POST", "/v1/jobs", {"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}}, 400, None),
        ("GET", "/v1/jobs/no-such-job", {}, 404, "JobNotFound"),
        ("DELETE", "/v1/jobs/no-such-job", {}, 404, "JobNotFound"),
        ("GET", "/v1/jobs", {"params": {"state": "sleeping"}}, 422, "BadRequest"),
        ("GET", "/v1/jobs", {"params": {"limit": "lots"}}, 422, "BadRequest"),
        ("GET", "/v1/nothing-here", {}, 404, "NotFound"),
        ("PUT", "/v1/run", {}, 405, "MethodNotAllowed"),
    ],
)
def test_malformed_requests_get_a_clean_4xx(
    http: httpx.Client, method: str, path: str, kwargs: dict, status: int, kind: str | None
) -> None:
    response = http.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if kind is not None:
        assert error["type"] == kind


def test_a_streamed_body_over_the_limit_is_413(http: httpx.Client) -> None:
    def chunks():
        for _ in range(40):
            yield b"x" * 4096

    response = http.post("/v1/run", content=chunks(), headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 413


def test_health_readiness_and_docs(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok", "state": "ready"}
    assert http.get("/readyz").json()["ready"] is True
    assert "swagger" in http.get("/docs").text.lower()
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/run", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/status", "/metrics"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/run"]["post"]["requestBody"]["content"]


def test_status_describes_stages_workers_and_jobs(http: httpx.Client) -> None:
    http.post("/v1/run", json={"item": 1})
    status = http.get("/v1/status").json()
    assert status["service"]["ready"] is True
    assert status["service"]["cores"] >= 1
    stages = {s["stage"]: s for s in status["stages"]}
    assert set(stages) == {"describe", "size", "kind"}
    assert stages["describe"]["done"] >= 1
    assert all(w["pid"] > 0 and w["state"] == "ready" for s in stages.values() for w in s["workers"])
    assert set(status["jobs"]["counts"]) == {"queued", "running", "done", "failed", "cancelled"}


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Host": "rebound.example:8000"}],
)
def test_other_sites_cannot_use_a_local_server(http: httpx.Client, headers: dict[str, str]) -> None:
    response = http.post("/v1/run", json={"item": 1}, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "Forbidden"


def test_same_origin_requests_are_served(http: httpx.Client, pipeline_server: Server) -> None:
    response = http.post("/v1/run", json={"item": 1}, headers={"Origin": pipeline_server.url})
    assert response.status_code == 200
