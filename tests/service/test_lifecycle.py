"""Start-up failures: a graph whose setup() raises stops the server with the reason."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


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
