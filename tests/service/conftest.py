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
from dataclasses import dataclass
from pathlib import Path

import pytest

for _module in ("fastapi", "uvicorn", "prometheus_client", "python_multipart", "websockets"):
    pytest.importorskip(_module, reason="the service extra is not installed: pip install -e '.[service]'")
httpx = pytest.importorskip("httpx", reason="the service extra is not installed: pip install -e '.[service]'")

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0
"""Seconds for a server to start its workers; the speech graph loads Whisper on 2 cores."""


@dataclass
class Server:
    """One server process and how to reach it."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

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
    server = Server(f"http://127.0.0.1:{port}", proc, log)
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


class Gates:
    """FIFOs that hold items of the `gated` graph in their stage until the test lets them go.

    Opening a FIFO for writing blocks until the stage has opened it for reading, so `release`
    and `entered` also prove that the item reached the stage.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def item(self, name: str) -> dict[str, str]:
        """A new gate and the item that waits on it."""
        os.mkfifo(self.root / name)
        return {"gate": name}

    def release(self, name: str, timeout: float = 30.0) -> None:
        fd = self.entered(name, timeout)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)

    def entered(self, name: str, timeout: float = 30.0) -> int:
        """Block until the item opened its gate; returns the write end (close it to release)."""
        path = self.root / name
        opened: list[int] = []
        thread = threading.Thread(target=lambda: opened.append(os.open(path, os.O_WRONLY)), daemon=True)
        thread.start()
        thread.join(timeout)
        if not opened:
            reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets our own opener finish
            thread.join()
            os.close(reader)
            os.close(opened[0])
            pytest.fail(f"the item of gate {name!r} did not reach its stage within {timeout} s")
        return opened[0]

    def release_all(self) -> None:
        """Free every item still waiting (teardown), without blocking on gates nobody opened."""
        for path in self.root.iterdir():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader on this gate
                continue
            try:
                os.write(fd, b"x")
            except BrokenPipeError:  # its reader, just released, closed it after our open
                pass
            finally:
                os.close(fd)


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Gates]:
    root = tmp_path / "gates"
    root.mkdir()
    made = Gates(root)
    yield made
    made.release_all()
