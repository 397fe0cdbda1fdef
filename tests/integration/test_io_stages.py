"""I/O-bound stages: many calls in flight in one worker (``concurrency``, ``async def``) and a
rate limit across replicas, against a local HTTP server with injected latency."""

from __future__ import annotations

import time

import pytest

import parapipe as pp

from . import _io_stages as st
from ._io_server import LatencyServer

LATENCY = 0.25


@pytest.fixture
def server():
    with LatencyServer(LATENCY) as srv:
        yield srv


def _rounds(engine: pp.Engine, urls: list[str]) -> tuple[list[object], float]:
    t0 = time.monotonic()
    out = list(engine.map(urls))
    return out, (time.monotonic() - t0) / LATENCY


@pytest.mark.parametrize("fn", [st.fetch, st.afetch], ids=["threads", "async"])
def test_200_calls_through_one_worker_take_a_few_rounds_not_200(server, fn):
    urls = [f"{server.url}/item/{i}" for i in range(200)]
    with pp.Engine(pp.stage(fn, concurrency=50)) as engine:
        out, rounds = _rounds(engine, urls)
        assert engine.stats()[fn.__name__]["restarts"] == 0
    assert out == [str(i) for i in range(200)]
    assert rounds < 12, f"200 calls at concurrency 50 took {rounds:.1f} rounds of latency (4 is ideal)"
    # The server counts a request until its handler returns, after the answer is on the wire,
    # so a worker's next call may begin a moment before: one stage never exceeds 50, the
    # server's count may by a call or two.
    assert server.peak <= 52


def test_an_async_setup_runs_on_the_loop_that_serves_the_items(server):
    with pp.Engine(st.AsyncFetch().options(concurrency=8)) as engine:
        out = list(engine.map([f"{server.url}/item/{i}" for i in range(16)]))
    assert out == [(str(i), True) for i in range(16)]


def test_a_stage_never_holds_more_than_replicas_times_concurrency(server):
    with pp.Engine(pp.stage(st.afetch, replicas=2, concurrency=3)) as engine:
        list(engine.map([f"{server.url}/item/{i}" for i in range(40)]))
    assert server.peak == 6


@pytest.mark.parametrize("fn", [st.fetch, st.afetch], ids=["threads", "async"])
def test_a_timeout_fails_only_its_item_and_keeps_the_worker(server, fn):
    stage = pp.stage(fn, concurrency=8, timeout=1.0)
    urls = [f"{server.url}/slow/30", *(f"{server.url}/item/{i}" for i in range(8))]
    with pp.Engine(stage) as engine:
        out = list(engine.map(urls, return_exceptions=True))
        assert engine.stats()[fn.__name__]["restarts"] == 0
    assert isinstance(out[0], pp.TaskTimeout)
    assert out[1:] == [str(i) for i in range(8)]


def test_a_timeout_listed_in_retry_on_is_retried(server):
    stage = pp.stage(st.afetch, concurrency=4, timeout=0.5, retries=2, retry_on=(pp.TaskTimeout,))
    with pp.Engine(stage) as engine:
        err = engine.submit(f"{server.url}/slow/30").exception()
    assert isinstance(err, pp.TaskTimeout)
    assert server.count("/slow/") == 3


@pytest.mark.parametrize("fn", [st.fetch, st.afetch], ids=["threads", "async"])
def test_a_connection_error_listed_in_retry_on_is_retried(server, fn):
    stage = pp.stage(fn, concurrency=10, retries=2, retry_on=(ConnectionError,))
    with pp.Engine(stage) as engine:
        out = list(engine.map([f"{server.url}/flaky/{i}" for i in range(10)]))
    assert out == [str(i) for i in range(10)]
    assert server.count("/flaky/") == 20


def test_a_connection_error_not_listed_fails_its_item(server):
    with pp.Engine(pp.stage(st.afetch, concurrency=4)) as engine:
        err = engine.submit(f"{server.url}/flaky/x").exception()
    assert isinstance(err, pp.StageError) and "ConnectionResetError" in err.exc_type


def test_rate_limit_holds_the_rate_across_replicas():
    rate, n = 40.0, 120
    stage = pp.stage(st.afetch, replicas=2, concurrency=4, rate_limit=f"{rate:g}/s")
    with LatencyServer(0.01) as server, pp.Engine(stage) as engine:
        list(engine.map([f"{server.url}/item/{i}" for i in range(n)]))
        times = sorted(t for t, path in server.arrivals if path.startswith("/item/"))
    measured = (len(times) - 1) / (times[-1] - times[0])
    assert abs(measured - rate) / rate < 0.10, f"measured {measured:.1f}/s for a limit of {rate:g}/s"
