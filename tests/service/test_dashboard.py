"""The dashboard in real headless Chromium: the page polls /v1/status and shows live numbers.

Skipped when Chromium is not installed (apt-get install chromium). Set
PARAPIPE_UPDATE_SCREENSHOT=1 to refresh docs/img/dashboard.png from this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from .conftest import REPO, Server

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

    with httpx.Client(base_url=pipeline_server.url) as http:
        for item in range(4):
            http.post("/v1/run", json={"item": item})
    second = _dashboard(tmp_path, pipeline_server.url)
    assert int(second.stages["describe"][4]) == int(describe[4]) + 4


def test_the_dashboard_screenshot(pipeline_server: Server, tmp_path: Path) -> None:
    with httpx.Client(base_url=pipeline_server.url) as http:
        for item in [1, "two", [3], "boom"]:
            http.post("/v1/jobs", json={"item": item})
    shot = tmp_path / "dashboard.png"
    _chromium(tmp_path, pipeline_server.url + "/", f"--screenshot={shot}", "--window-size=1280,860")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("PARAPIPE_UPDATE_SCREENSHOT"):
        shutil.copy(shot, REPO / "docs" / "img" / "dashboard.png")
