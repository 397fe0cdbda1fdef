"""The dashboard in real headless Chromium: the page polls /v1/status and shows live numbers,
and under load it draws the graph, the cores and the charts from /v1/history, fetching nothing
from anywhere but the server.

Skipped when Chromium is not installed (apt-get install chromium). Set
PARAPIPE_UPDATE_SCREENSHOT=1 to refresh docs/img/dashboard.png from this test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from .conftest import REPO, Server, start_server

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed: apt-get install chromium")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--disable-features=AutofillServerCommunication",  # the browser's own calls for the page's forms
    "--virtual-time-budget=3500",  # the page refreshes every second: three or four polls
]


def _chromium(tmp_path: Path, url: str, *args: str) -> str:
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    return done.stdout


class _Rows(HTMLParser):
    """The text of every cell of the rows marked ``data-stage``, and the body's update count."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: dict[str, list[str]] = {}
        self.updates = 0
        self.state = ""
        self._row: list[str] | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "body":
            self.updates = int(found.get("data-updates") or 0)
        elif tag == "tr" and found.get("data-stage"):
            self._row = self.stages.setdefault(str(found["data-stage"]), [])
        elif tag == "td" and self._row is not None:
            self._row.append("")
            self._in = "td"
        elif found.get("id") == "state":
            self._in = "state"

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        if tag in ("td", "span"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "td" and self._row is not None:
            self._row[-1] += data
        elif self._in == "state":
            self.state += data


def _dashboard(tmp_path: Path, url: str) -> _Rows:
    rows = _Rows()
    rows.feed(_chromium(tmp_path, url + "/", "--dump-dom"))
    return rows


def _done(server: Server, stage: str) -> int:
    stages = httpx.get(server.url + "/v1/status").json()["stages"]
    return next(s["done"] for s in stages if s["stage"] == stage)


def test_the_dashboard_shows_live_numbers(pipeline_server: Server, tmp_path: Path) -> None:
    with httpx.Client(base_url=pipeline_server.url) as http:
        for item in range(3):
            http.post("/v1/run", json={"item": item})
    first = _dashboard(tmp_path, pipeline_server.url)
    assert first.state == "ready"
    assert first.updates >= 2, "the page did not refresh itself"
    assert set(first.stages) == {"describe", "size", "kind"}
    describe = first.stages["describe"]
    assert int(describe[4]) == _done(pipeline_server, "describe")  # the "done" column
    assert describe[1].endswith("ready") and str(pipeline_server.proc.pid) not in describe[1]
    assert first.stages["kind"][1].endswith("ready · nice 5"), "a lowered worker shows its nice"

    with httpx.Client(base_url=pipeline_server.url) as http:
        for item in range(4):
            http.post("/v1/run", json={"item": item})
    second = _dashboard(tmp_path, pipeline_server.url)
    assert int(second.stages["describe"][4]) == int(describe[4]) + 4


STAGES = {"describe", "size", "kind"}


class _Drawn(HTMLParser):
    """What the page drew: stage boxes, chart series and their point counts, marks, core rows."""

    def __init__(self) -> None:
        super().__init__()
        self.boxes: set[str] = set()
        self.series: dict[str, dict[str, int]] = {}
        self.marks: dict[str, set[str]] = {}
        self.cores: list[str] = []
        self._chart: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "svg" and "data-chart" in found:
            self._chart = found["data-chart"]
            self.series[self._chart], self.marks[self._chart] = {}, set()
        if found.get("data-node") == "stage":
            self.boxes.add(found["data-stage"])
        if self._chart and "data-series" in found:
            self.series[self._chart][found["data-series"]] = int(found["data-points"])
        if self._chart and "data-mark" in found:
            self.marks[self._chart].add(found["data-mark"])
        if "data-core" in found:
            self.cores.append(found["data-core"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = None


@pytest.fixture
def busy_server(tmp_path: Path) -> Iterator[Server]:
    """The pipeline graph with room for two requests at once, so a few clients get 429s. One per
    test: a worker the engine restarts is a new child, which the leak check would blame."""
    server = start_server("pipeline", tmp_path, "--max-queue", "2")
    yield server
    server.stop()


@pytest.fixture
def load(busy_server: Server) -> Iterator[None]:
    """Three clients posting items without pause until the test ends."""
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=busy_server.url, timeout=30) as http:
            n = 0
            while not stop.is_set():
                http.post("/v1/run", json={"item": n})
                n += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join(timeout=30)


def _history_until(server: Server, *, samples: int, marks: set[str], timeout: float = 90.0) -> None:
    """Long-poll /v1/history until it holds ``samples`` samples with a rate for every stage and
    marks of every kind in ``marks``: each request returns when the sampler takes a sample."""
    deadline = time.monotonic() + timeout
    since, rated, seen = 0.0, 0, set()
    while rated < samples or not marks <= seen:
        assert time.monotonic() < deadline, f"history after {timeout} s: {rated} samples, marks {seen}"
        view = httpx.get(server.url + "/v1/history", params={"since": since, "wait": 10}, timeout=30).json()
        rated += sum(all(s["stages"].get(n, {}).get("items_per_s") for n in STAGES) for s in view["samples"])
        seen |= {m["kind"] for m in view["marks"]}
        since = view["samples"][-1]["t"] if view["samples"] else since


def _worker_pid(server: Server, stage: str) -> int:
    stages = httpx.get(server.url + "/v1/status").json()["stages"]
    return int(next(s for s in stages if s["stage"] == stage)["workers"][0]["pid"])


def _page_requests(netlog: Path, server: Server) -> set[str]:
    """Every URL requested on behalf of the page, from the browser's NetLog: the requests whose
    network isolation key is the page's site. The browser's own traffic (component updates, the
    network clock) has no such key, and a CDN script or font the page loaded would have it."""
    site = server.url.rsplit(":", 1)[0]
    urls = set()
    for event in json.loads(netlog.read_text())["events"]:
        params = event.get("params") or {}
        if "url" in params and params.get("network_isolation_key") == f"{site} {site}":
            urls.add(params["url"])
    return urls


def test_under_load_the_page_draws_the_graph_cores_and_charts_from_the_server_alone(
    busy_server: Server, load: None, tmp_path: Path
) -> None:
    os.kill(_worker_pid(busy_server, "size"), signal.SIGKILL)  # the engine restarts it: a mark
    _history_until(busy_server, samples=4, marks={"429", "restart"})
    netlog = tmp_path / "netlog.json"
    drawn = _Drawn()
    drawn.feed(_chromium(tmp_path, busy_server.url + "/", "--dump-dom", f"--log-net-log={netlog}"))

    assert drawn.boxes == STAGES, "the graph must show every stage"
    assert drawn.series["items_per_s"].keys() == STAGES
    assert all(n >= 2 for n in drawn.series["items_per_s"].values()), drawn.series
    assert drawn.series["latency"].keys() == {f"{s}:{q}" for s in STAGES for q in ("p50", "p99")}
    assert all(n >= 2 for n in drawn.series["queued"].values()), drawn.series
    assert drawn.marks["items_per_s"] == {"429", "restart"}
    assert len(drawn.cores) == len(os.sched_getaffinity(0))

    urls = _page_requests(netlog, busy_server)
    assert any(u.startswith(busy_server.url + "/v1/history") for u in urls), urls
    outside = {u for u in urls if not u.startswith(busy_server.url + "/")}
    assert not outside, f"the page fetched from outside the server: {outside}"


def test_the_dashboard_screenshot(busy_server: Server, load: None, tmp_path: Path) -> None:
    _history_until(busy_server, samples=12, marks={"429"})
    shot = tmp_path / "dashboard.png"
    _chromium(tmp_path, busy_server.url + "/", f"--screenshot={shot}", "--window-size=1280,1000")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("PARAPIPE_UPDATE_SCREENSHOT"):
        shutil.copy(shot, REPO / "docs" / "img" / "dashboard.png")
