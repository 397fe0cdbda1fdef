"""The HTTP service under load: N concurrent clients against `parapipe serve` and a plain FastAPI app.

Systems, each a real server process on a loopback port:
  * parapipe, no-op graph: ``parapipe serve`` of one no-op stage with one replica per core;
    clients POST ``/v1/run``. Also once at the highest concurrency with ``--max-queue 64``,
    to show admission control refusing work (429 + Retry-After) instead of queueing it.
  * FastAPI + ProcessPoolExecutor: the usual hand-written service, one ``run_in_executor``
    per request into a pool of one process per core, same no-op function.
  * parapipe, speech graph (when the audio extra, espeak-ng and sox are here): clients upload
    a 4-second WAV; ``--max-queue 16``.

Each client is one keep-alive connection looping request -> response until the time is up
(closed loop), honouring Retry-After on a 429. The clients run in this process (asyncio
streams and prebuilt requests, so the load generator stays cheap), on the same machine as
the servers: at high concurrency they compete with the server for the same cores.

Usage: python benchmarks/serve.py [--clients 1 8 32 128] [--seconds 5] [--speech-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body  # resolved by FastAPI from this module's globals (string annotations)

import parapipe as pp

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKERS = len(os.sched_getaffinity(0))
HANG_SECONDS = 120.0
"""After the measured time, how long the last requests may take before they count as errors."""


def noop(item: Any) -> Any:
    return item


noop_graph = pp.stage(noop, name="noop", replicas=WORKERS)


class BatchedNoop(pp.Stage):
    """The seed write-up's batching rule, "128 items or 1 s", around a no-op model."""

    name = "batched"
    replicas = WORKERS
    batch_size = 128
    batch_wait = 1.0

    def process_batch(self, items: list[Any]) -> list[Any]:
        return items


batched_graph = BatchedNoop()


def speech_graph() -> Any:
    from parapipe.audio import analysis_graph

    return analysis_graph(max_seconds=60)


def baseline_app() -> Any:
    """The comparison: an idiomatic FastAPI app calling a ProcessPoolExecutor in each request."""
    from fastapi import FastAPI

    pool: dict[str, ProcessPoolExecutor] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        pool["p"] = ProcessPoolExecutor(WORKERS)
        pool["p"].submit(noop, 0).result()  # start the workers before the clients do
        yield
        pool["p"].shutdown()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/run")
    async def run(item: Annotated[Any, Body(embed=True)]) -> dict[str, Any]:
        return {"result": await asyncio.get_running_loop().run_in_executor(pool["p"], noop, item)}

    return app


@dataclass
class Load:
    """What one closed-loop run measured."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    why: collections.Counter[str] = field(default_factory=collections.Counter)
    """What the errors were: a status, or the exception a client ended with."""
    rejected: int = 0
    stuck: int = 0
    seconds: float = 0.0

    def row(self, system: str, clients: int) -> list[Any]:
        lat = sorted(self.latencies)

        def ms(q: float) -> str:
            return f"{lat[min(len(lat) - 1, int(q * len(lat)))] * 1000:.1f}" if lat else "-"

        rate = len(lat) / self.seconds if self.seconds else 0.0
        if self.errors:  # said before the table, so an error count is never a mystery
            print(f"{system}, {clients} clients: errors {dict(+self.why)}")
        return [system, clients, len(lat), f"{rate:.1f}", ms(0.50), ms(0.99), self.errors, self.rejected]


def post(url: str, path: str, body: bytes, content_type: str) -> bytes:
    """One HTTP/1.1 POST, ready to write on a keep-alive connection."""
    host = url.removeprefix("http://")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, float, bool]:
    """Send one request; (status, Retry-After or 0, whether the server closes the connection)
    once its whole response is read. A server that refuses an upload before reading its body
    (a 429) must close the connection, so the client opens a new one."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    await reader.readexactly(int(headers.get("content-length", 0)))
    closing = headers.get("connection", "").strip().lower() == "close"
    return int(lines[0].split(" ", 2)[1]), float(headers.get("retry-after", 0)), closing


async def closed_loop(url: str, clients: int, seconds: float, request: bytes) -> Load:
    """``clients`` connections each sending ``request`` back to back for ``seconds``.

    A hand-written HTTP/1.1 client (asyncio streams, keep-alive, a prebuilt request): with a
    general client library, a single process driving 128 connections measures the library.
    """
    load = Load()
    host, port = url.removeprefix("http://").split(":")
    start = time.perf_counter()
    deadline = start + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    status, retry_after, closing = await _exchange(reader, writer, request)
                except (asyncio.IncompleteReadError, ConnectionError):
                    # The server dropped the connection while it sat idle (uvicorn closes idle
                    # keep-alive connections after 5 s, e.g. during a long Retry-After): resend
                    # once on a new one, as HTTP clients do.
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                    status, retry_after, closing = await _exchange(reader, writer, request)
                if closing:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                if status == 429:
                    load.rejected += 1
                    await asyncio.sleep(min(retry_after, max(0.0, deadline - t0)))
                elif status != 200:
                    load.errors += 1
                    load.why[f"HTTP {status}"] += 1
                else:
                    load.latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    _, stuck = await asyncio.wait(tasks, timeout=seconds + HANG_SECONDS)
    for task in stuck:  # a request that never came back counts as an error, not a wait forever
        task.cancel()
    _count_ended(load, tasks, stuck)
    load.seconds = time.perf_counter() - start
    return load


def _count_ended(load: Load, tasks: list[asyncio.Task[None]], stuck: set[asyncio.Task[None]]) -> None:
    """Clients that never came back, or ended with an exception, count as errors, by cause."""
    load.stuck = len(stuck)
    load.errors += len(stuck)
    load.why["no answer"] += len(stuck)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            load.errors += 1
            load.why[type(task.exception()).__name__] += 1


@contextlib.contextmanager
def server(command: list[str], ready_path: str, cwd: Path) -> Iterator[str]:
    """A server process on an inherited loopback socket; yields its URL once ``ready_path`` is 200."""
    import httpx

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proc = subprocess.Popen(
        [*command, "--fd", str(sock.fileno())], cwd=cwd, pass_fds=[sock.fileno()], stdout=subprocess.DEVNULL
    )
    sock.close()
    try:
        httpx.get(url + ready_path, timeout=300).raise_for_status()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()  # its workers follow: they exit when their parent dies
            proc.wait()


def _parapipe(graph: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "parapipe.service",
        f"serve:{graph}",
        "--journal",
        ":memory:",
        "--log-level",
        "warning",
        *args,
    ]


def _json_item(url: str) -> bytes:
    return post(url, "/v1/run", b'{"item": {"n": 1}}', "application/json")


def bench_noop(clients: list[int], seconds: float) -> list[list[Any]]:
    rows = []
    systems = [
        ("parapipe serve, no-op", _parapipe("noop_graph"), "/readyz?wait=60"),
        ("FastAPI + ProcessPoolExecutor, no-op", [sys.executable, "serve.py", "--baseline"], "/healthz"),
        ("parapipe serve --max-queue 64, no-op", _parapipe("noop_graph", "--max-queue", "64"), "/readyz?wait=60"),
    ]
    for name, command, ready in systems:
        levels = clients if "max-queue" not in name else clients[-1:]
        with server(command, ready, HERE) as url:
            asyncio.run(closed_loop(url, 8, 1.0, _json_item(url)))  # warm-up: connections, first items
            for n in levels:
                rows.append(asyncio.run(closed_loop(url, n, seconds, _json_item(url))).row(name, n))
    return rows


async def job_loop(url: str, clients: int, seconds: float, body: bytes) -> Load:
    """``clients`` connections each queueing a job, then long-polling it to its end, back to back."""
    import json

    load = Load()
    host, port = url.removeprefix("http://").split(":")
    start = time.perf_counter()
    deadline = start + seconds

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, Any]:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        data = await reader.readexactly(int(headers.get("content-length", 0)))
        return int(lines[0].split(" ", 2)[1]), json.loads(data) if data else None

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                status, sent = await answer(reader, writer, post(url, "/v1/jobs", body, "application/json"))
                if status != 202:
                    load.errors += 1
                    load.why[f"HTTP {status}"] += 1
                    continue
                state = "queued"
                while state in ("queued", "running"):
                    poll = f"GET /v1/jobs/{sent['id']}?wait=30 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
                    status, view = await answer(reader, writer, poll)
                    state = view.get("state") if status == 200 else "error"
                if state == "done":
                    load.latencies.append(time.perf_counter() - t0)
                else:
                    load.errors += 1
                    load.why[f"job {state}"] += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    _, stuck = await asyncio.wait(tasks, timeout=seconds + HANG_SECONDS)
    for task in stuck:
        task.cancel()
    _count_ended(load, tasks, stuck)
    load.seconds = time.perf_counter() - start
    return load


def _mean_batch(url: str) -> float:
    import httpx

    stages = httpx.get(url + "/v1/status", timeout=30).json()["stages"]
    return float(next(s for s in stages if s.get("batches"))["batches"]["mean_size"])


def bench_batching(clients: int, seconds: float) -> list[list[Any]]:
    """A "128 items or 1 s" batching stage behind /v1/run and behind /v1/jobs: the mean batch
    size shows whether concurrent requests reach the batcher together."""
    rows = []
    body = b'{"item": {"n": 1}}'
    for name, loop in (("/v1/run", closed_loop), ("/v1/jobs", job_loop)):
        # one connection per client: raise the server's connection cap (256 by default) above them
        command = _parapipe("batched_graph", "--max-queue", str(4 * clients), "--max-connections", str(clients + 64))
        with server(command, "/readyz?wait=60", HERE) as url:
            request = _json_item(url) if loop is closed_loop else body
            load = asyncio.run(loop(url, clients, seconds, request))
            rows.append([*load.row(f"parapipe serve, batch 128 / 1 s, {name}", clients), f"{_mean_batch(url):.1f}"])
    return rows


def bench_speech(clients: list[int], seconds: float) -> list[list[Any]]:
    """The speech graph on a corpus clip, or no rows when its tools are missing."""
    if seconds <= 0:
        return []
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        missing.append("the audio extra")
    if missing:
        print(f"speech rows skipped: {', '.join(missing)} missing")
        return []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_corpus.py"), tmp], check=True, capture_output=True)
        wav = (Path(tmp) / "test" / "alan_1.wav").read_bytes()

        rows = []
        with server(_parapipe("speech_graph", "--max-queue", "16"), "/readyz?wait=60", HERE) as url:
            upload = post(url, "/v1/run", wav, "application/octet-stream")
            asyncio.run(closed_loop(url, 2, 5.0, upload))  # warm-up
            for n in clients:
                load = asyncio.run(closed_loop(url, n, seconds, upload))
                rows.append(load.row("parapipe serve, speech", n))
                if load.stuck:
                    print(f"speech: {load.stuck} requests never answered at {n} clients; later levels not run")
                    break
        return rows


def run_baseline(fd: int) -> None:
    """Serve `baseline_app` with uvicorn on an inherited socket, as `parapipe serve --fd` does."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(baseline_app(), log_level="warning"))
    server.run(sockets=[socket.socket(fileno=fd)])


def main() -> None:
    from _common import Figure, machine_line, parse_args, report

    figure = Figure("the HTTP service under concurrent clients", ("system",), ("req/s", "p99 ms"), x="clients",
                    log=True)  # fmt: skip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per no-op row")
    parser.add_argument("--speech-seconds", type=float, default=20.0, help="measured seconds per speech row")
    parser.add_argument("--batch-clients", type=int, default=300, help="concurrent clients of the batching rows")
    parser.add_argument("--batch-seconds", type=float, default=10.0, help="measured seconds per batching row (0: skip)")
    args = parse_args(parser, figure)
    if args is None:
        return
    if args.baseline:
        run_baseline(args.fd)
        return
    rows = [[*r, ""] for r in bench_noop(args.clients, args.seconds) + bench_speech(args.clients, args.speech_seconds)]
    if args.batch_seconds > 0:
        rows += bench_batching(args.batch_clients, args.batch_seconds)
    headers = ["system", "clients", "requests", "req/s", "p50 ms", "p99 ms", "errors", "429", "mean batch"]
    report(
        figure,
        headers,
        rows,
        args.plot,
        title="HTTP service under concurrent clients",
        notes=[machine_line(), f"workers per system: {WORKERS}; clients run in one asyncio process on the same cores"],
    )


if __name__ == "__main__":
    main()
