"""Real servers for the service tests: ``python -m parapipe.service`` in a subprocess.

Each server inherits a listening socket the test bound to a free loopback port (``--fd``), so
requests queue in its backlog before uvicorn runs: nothing polls for the port, the first request
(``/readyz?wait=``, a long poll) simply waits until the engine is up. Servers are stopped with
SIGTERM (a graceful drain) at teardown, and their log is shown when a test fails to start one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed: pip install -e '.[service]'")
pytest.importorskip("uvicorn", reason="the service extra is not installed: pip install -e '.[service]'")

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0
"""Seconds for a server to start its workers; the speech graph loads Whisper on 2 cores."""


@dataclass
class Server:
    """One server process and how to reach it."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    args: list[str] = field(default_factory=list)

    def stop(self) -> int:
        """SIGTERM and wait for the graceful shutdown; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    graph: str, tmp: Path, *args: str, env: dict[str, str] | None = None, wait_ready: bool = True
) -> Server:
    """Start ``tests.service._graphs:<graph>`` (or a MODULE:NAME) and wait until it is ready."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    spec = graph if ":" in graph else f"tests.service._graphs:{graph}"
    log = tmp / f"server-{port}.log"
    command = [sys.executable, "-m", "parapipe.service", spec, "--fd", str(sock.fileno()), "--log-level", "warning"]
    if not any(a.startswith("--journal") for a in args):
        command += ["--journal", str(tmp / f"jobs-{port}.db")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, *args],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=[sock.fileno()],
            env={**os.environ, **(env or {})},
        )
    sock.close()  # the server holds its own copy
    server = Server(f"http://127.0.0.1:{port}", proc, log, list(args))
    if wait_ready:
        wait_until_ready(server)
    return server


def wait_until_ready(server: Server) -> None:
    """One long poll of /readyz; fails with the server's log if it does not come up."""
    try:
        response = httpx.get(f"{server.url}/readyz", params={"wait": 60}, timeout=START_TIMEOUT)
    except httpx.HTTPError as exc:
        server.stop()
        pytest.fail(f"server did not start ({exc}); its log:\n{server.log_text()}")
    if response.status_code != 200:
        server.stop()
        pytest.fail(f"server not ready: {response.text}; its log:\n{server.log_text()}")


@pytest.fixture(scope="session")
def pipeline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The describe -> (size | kind) graph, no keys, a 64 KiB body limit; shared by many tests."""
    server = start_server("pipeline", tmp_path_factory.mktemp("pipeline"), "--max-body-bytes", str(64 * 1024))
    yield server
    server.stop()


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO for the `gated` stage; whatever is still blocked on it is released at teardown."""
    path = tmp_path / "gate"
    os.mkfifo(path)
    yield path
    release_all(path)


def release(path: Path, timeout: float = 30.0) -> None:
    """Let one blocked "wait" item through: the open blocks until the stage opens its end."""
    fd = _open_writer(path, timeout)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)


def _open_writer(path: Path, timeout: float) -> int:
    """Open the FIFO for writing once a reader is there, failing after ``timeout`` seconds."""
    opened: list[int] = []
    thread = threading.Thread(target=lambda: opened.append(os.open(path, os.O_WRONLY)), daemon=True)
    thread.start()
    thread.join(timeout)
    if not opened:
        # unblock our own opener so the thread ends, then fail
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        thread.join()
        os.close(reader)
        os.close(opened[0])
        pytest.fail(f"nothing read the gate {path} within {timeout} s: the gated item never started")
    return opened[0]


def release_all(path: Path) -> None:
    """Release whatever is blocked on the FIFO now, without blocking when nothing is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader, nothing to release
        return
    try:
        os.write(fd, b"x" * 64)
    finally:
        os.close(fd)
