"""Fetch documents over HTTP (I/O-bound, async, 64 in flight), score them with a CPU model in
its own Python environment, write the results: one pipeline, two kinds of stage.

The documents come from a local HTTP server this script starts, with injected latency, so the
example runs anywhere: ``python pipeline.py --docs 300 --out scores.jsonl``. Give the model
stage another environment with ``--model-env DIR`` (a virtualenv holding numpy and parapipe).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

import parapipe as pp

WORDS = [
    "data",
    "model",
    "stage",
    "worker",
    "pipeline",
    "network",
    "latency",
    "numpy",
    "python",
    "process",
    "thread",
    "queue",
]


async def fetch(url: str) -> dict[str, str]:
    """One GET with asyncio streams (no HTTP library needed); 64 of these share one worker."""
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET {parts.path} HTTP/1.0\r\nHost: {parts.hostname}\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    if not raw:
        raise ConnectionResetError(f"{url}: no answer")
    return {"url": url, "text": raw.split(b"\r\n\r\n", 1)[1].decode()}


class Scorer(pp.Stage):
    """A small CPU model: bag of words -> a fixed random projection -> a score. Runs wherever
    its ``python=`` says; what crosses is a dict of strings in, a dict of floats out."""

    def setup(self) -> None:
        rng = np.random.default_rng(0)
        self.weights = rng.standard_normal((len(WORDS), 16))

    def process(self, doc: dict[str, str]) -> dict[str, object]:
        counts = np.array([doc["text"].split().count(w) for w in WORDS], dtype=np.float64)
        score = float(np.tanh(counts @ self.weights).sum())
        return {"url": doc["url"], "score": round(score, 6), "numpy": np.__version__}


def serve_documents(latency: float) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(latency)  # the network
            n = int(self.path.rsplit("/", 1)[-1])
            body = " ".join(WORDS[(n * k) % len(WORDS)] for k in range(1, 200)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Quiet."""

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the server takes per document")
    parser.add_argument("--model-env", help="a virtualenv or conda env (or interpreter) for the model stage")
    parser.add_argument("--rate", default=None, help="a rate limit for the fetches, e.g. 200/s")
    parser.add_argument("--out", default="scores.jsonl")
    args = parser.parse_args()
    server, url = serve_documents(args.latency)
    graph = pp.Pipeline(
        pp.stage(fetch, concurrency=64, retries=2, retry_on=(ConnectionError,), timeout=30, rate_limit=args.rate),
        Scorer().options(python=args.model_env),
    )
    try:
        with pp.Engine(graph) as engine, open(args.out, "w") as out:
            print(engine.plan())
            t0 = time.monotonic()
            for result in engine.map(f"{url}/doc/{i}" for i in range(args.docs)):
                out.write(json.dumps(result) + "\n")
            took = time.monotonic() - t0
    finally:
        server.shutdown()
    print(f"{args.docs} documents in {took:.2f} s ({args.docs * args.latency:.0f} s one at a time); wrote {args.out}")


if __name__ == "__main__":
    main()
