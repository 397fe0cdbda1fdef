"""The dashboard's sampler without a server: a fake service and a hand-driven clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parapipe.service.history import History


class _Admission:
    rejected = 0


class _FakeService:
    """Totals the test sets by hand, read the way `Service` exposes them."""

    def __init__(self) -> None:
        self.admission = _Admission()
        self.rows: dict[str, dict[str, Any]] = {}
        self.replicas = {"a": 2}

    def set(self, name: str, *, done: int, busy: float, restarts: int = 0, queued: int = 0) -> None:
        self.rows[name] = {"done": done, "busy_s": busy, "restarts": restarts, "queued": queued, "in_flight": 1,
                           "latency_p50_s": 0.01, "latency_p99_s": 0.25}  # fmt: skip

    def stage_stats(self) -> dict[str, dict[str, Any]]:
        return self.rows

    def worker_rows(self) -> list[dict[str, Any]]:
        return [{"stage": s, "replica": r} for s, n in self.replicas.items() for r in range(n)]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _history(window: float = 600.0) -> tuple[History, _FakeService, _Clock]:
    service, clock = _FakeService(), _Clock()
    return History(service, interval=1.0, window=window, clock=clock), service, clock


def test_a_sample_holds_rates_and_busy_shares_since_the_last_one() -> None:
    history, service, clock = _history()
    service.set("a", done=10, busy=1.0, queued=3)
    first = history.sample()
    assert first["stages"]["a"]["items_per_s"] is None  # no interval yet: a total is not a rate
    clock.now += 2.0
    service.set("a", done=30, busy=3.0, queued=5)
    second = history.sample()["stages"]["a"]
    assert second["items_per_s"] == 10.0
    assert second["busy"] == 0.5  # 2 busy seconds over 2 s of 2 replicas
    assert (second["queued"], second["p50_ms"], second["p99_ms"]) == (5, 10.0, 250.0)
    assert len(history.sample()["cpu"]) == len(history.view()["cores"])


def test_429s_and_restarts_become_marks_at_their_sample() -> None:
    history, service, clock = _history()
    service.set("a", done=0, busy=0.0)
    history.sample()
    clock.now += 1.0
    service.admission.rejected = 4
    service.set("a", done=1, busy=0.1, restarts=1)
    history.sample()
    assert sorted(history.view()["marks"], key=lambda m: m["kind"]) == [
        {"t": 1001.0, "kind": "429", "count": 4},
        {"t": 1001.0, "kind": "restart", "stage": "a", "count": 1},
    ]
    clock.now += 1.0
    history.sample()
    assert len(history.view()["marks"]) == 2  # unchanged totals add no mark


def test_a_restart_before_the_stage_first_shows_is_marked_too() -> None:
    history, service, _ = _history()
    history.sample()  # the engine is still starting: no stages yet
    service.set("a", done=0, busy=0.0, restarts=1)
    history.sample()
    assert [m["kind"] for m in history.view()["marks"]] == ["restart"]


def test_only_the_window_is_kept_and_since_returns_what_is_new() -> None:
    history, service, clock = _history(window=5.0)
    service.set("a", done=0, busy=0.0)
    service.admission.rejected = 1
    for _ in range(8):
        history.sample()
        clock.now += 1.0
    times = [s["t"] for s in history.view()["samples"]]
    assert times == [1003.0, 1004.0, 1005.0, 1006.0, 1007.0]
    assert history.view()["marks"] == []  # the 429 at 1000 s fell out of the window
    assert [s["t"] for s in history.view(since=1005.0)["samples"]] == [1006.0, 1007.0]


def test_a_long_poll_returns_at_the_next_sample_or_at_its_timeout() -> None:
    async def scenario() -> None:
        history, service, clock = _history()
        history.interval = 0.01
        service.set("a", done=0, busy=0.0)
        history.start()
        try:
            await history.wait_newer(0.0, timeout=30)
            first = history.view()["samples"][-1]["t"]
            await history.wait_newer(first, timeout=0.05)  # the clock stands still: nothing newer comes
            assert history.view(since=first)["samples"] == []
            clock.now += 1.0
            await history.wait_newer(first, timeout=30)
            assert history.view(since=first)["samples"][0]["t"] == first + 1.0
        finally:
            await history.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.parametrize("interval", [1.0, 2.0])
def test_ten_minutes_of_samples_fit_the_buffer(interval: float) -> None:
    history, service, clock = _history()
    history = History(service, interval=interval, clock=clock)
    service.set("a", done=0, busy=0.0)
    for _ in range(int(700 / interval)):
        history.sample()
        clock.now += interval
    samples = history.view()["samples"]
    assert samples[-1]["t"] - samples[0]["t"] == pytest.approx(600 - interval)


@pytest.mark.parametrize("path", ["/v1/history", "/v1/graph"])
def test_the_dashboard_data_needs_the_api_key_like_the_rest_of_v1(path: str) -> None:
    from fastapi.testclient import TestClient

    from parapipe.service import ServiceConfig, create_app

    from ._graphs import echo

    app = create_app(echo, ServiceConfig(api_keys=("k1-0123456789abcdef",), journal_path=":memory:"))
    client = TestClient(app)  # no lifespan: the key is checked before the service is asked
    assert client.get(path).status_code == 401
    assert client.get("/v1/graph", headers={"Authorization": "Bearer k1-0123456789abcdef"}).json() == {
        "shape": {"stage": "echo"}
    }
