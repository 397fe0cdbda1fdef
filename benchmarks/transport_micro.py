"""Micro-benchmark of ``parapipe.transport``: a large float32 array echoed through a child.

Run::

    python benchmarks/transport_micro.py [--mib 32] [--repeat 15]

Echo modes (the child is spawned, like parapipe's workers, and talks over a Pipe):

* ``pipe-pickle``: ``send_bytes(pickle.dumps(obj, protocol=5))``, what multiprocessing.Pool does.
* ``shm``: ``encode`` / ``decode`` from ``parapipe.transport``; the parent releases the segments.

Each round trip includes the parent reading the whole result (``sum``), because a mapped
array defers its page faults to the first read. Throughput is payload bytes / round trip
(one direction counted; 1 MB = 1e6 bytes).

It also times small-object ``encode``/``decode`` against ``pickle.dumps``/``loads``, and
filling a fresh segment against rewriting an existing one (the saving that segment reuse
would bring, see the transport module docstring).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import statistics
import time
import timeit
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np
from _common import Figure, parse_args, plot_table

from parapipe.transport import SegmentArena, decode, encode, release, segment_names


def _child(conn: Connection, mode: str, owner_pid: int) -> None:
    """Echo every message back, decoded and re-encoded; an empty message ends the loop."""
    arena = SegmentArena(owner_pid)
    while msg := conn.recv_bytes():
        if mode == "shm":
            conn.send_bytes(encode(decode(msg), arena=arena))
        else:
            conn.send_bytes(pickle.dumps(pickle.loads(msg), protocol=5))


def _round_trip(conn: Connection, mode: str, arr: np.ndarray, arena: SegmentArena) -> float:
    """One echo, timed up to the parent having read the result; returns seconds."""
    start = time.perf_counter()
    if mode == "shm":
        request = encode(arr, arena=arena)
        conn.send_bytes(request)
        reply = conn.recv_bytes()
        out = decode(reply)
        release(segment_names(request) + segment_names(reply))
    else:
        conn.send_bytes(pickle.dumps(arr, protocol=5))
        out = pickle.loads(conn.recv_bytes())
    out.sum()
    elapsed = time.perf_counter() - start
    assert np.array_equal(out[:: 1 << 12], arr[:: 1 << 12])
    return elapsed


def bench_echo(mode: str, arr: np.ndarray, repeat: int) -> list[float]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, mode, os.getpid()))
    proc.start()
    child.close()
    arena = SegmentArena()
    try:
        _round_trip(parent, mode, arr, arena)  # warm-up: imports, first mappings
        return [_round_trip(parent, mode, arr, arena) for _ in range(repeat)]
    finally:
        parent.send_bytes(b"")
        proc.join()


def bench_small(number: int = 100_000) -> dict[str, float]:
    """Microseconds per call for a small dict: the pickle fast path must stay cheap."""
    obj = {"id": 17, "text": "hello world", "scores": [0.1, 0.2, 0.3]}
    arena = SegmentArena()
    msg = encode(obj, arena=arena)
    calls: dict[str, Callable[[], object]] = {
        "pickle.dumps": lambda: pickle.dumps(obj, protocol=5),
        "encode": lambda: encode(obj, arena=arena),
        "pickle.loads": lambda: pickle.loads(msg),
        "decode": lambda: decode(msg),
    }
    return {name: min(timeit.repeat(call, number=number, repeat=7)) / number * 1e6 for name, call in calls.items()}


def bench_segment_fill(arr: np.ndarray, repeat: int) -> dict[str, float]:
    """Milliseconds to write ``arr`` into a new segment vs over an existing one."""
    arena = SegmentArena()
    data = memoryview(arr).cast("B")
    fresh = []
    for _ in range(repeat):
        start = time.perf_counter()
        name = arena.store(data)
        fresh.append(time.perf_counter() - start)
        release([name])
    name = arena.store(data)
    fd = os.open(f"/dev/shm/{name}", os.O_WRONLY)
    reuse = []
    for _ in range(repeat):
        start = time.perf_counter()
        os.pwrite(fd, data, 0)
        reuse.append(time.perf_counter() - start)
    os.close(fd)
    release([name])
    return {"fresh segment": statistics.median(fresh), "reused segment": statistics.median(reuse)}


FIGURE = Figure("a large array echoed through a child: MB/s (higher is better)", ("mode",), ("median MB/s",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=15)
    args = parse_args(parser, FIGURE)
    if args is None:
        return
    echoes = []
    arr = np.random.default_rng(0).random(args.mib * (1 << 20) // 4, dtype=np.float32)
    print(f"echo of a {args.mib} MiB float32 array, {args.repeat} round trips")
    for mode in ("pipe-pickle", "shm"):
        times = bench_echo(mode, arr, args.repeat)
        med, best = statistics.median(times), min(times)
        echoes.append([mode, f"{arr.nbytes / med / 1e6:.0f}"])
        print(
            f"  {mode:12s} median {med * 1e3:7.1f} ms  {arr.nbytes / med / 1e6:7.0f} MB/s"
            f"   (best {best * 1e3:.1f} ms, {arr.nbytes / best / 1e6:.0f} MB/s)"
        )
    print("small dict, us per call:")
    for name, micros in bench_small().items():
        print(f"  {name:13s} {micros:6.2f}")
    if args.plot:
        plot_table(FIGURE, ["mode", "median MB/s"], echoes, args.plot)
    print(f"filling a segment with {args.mib} MiB, ms (median):")
    for name, seconds in bench_segment_fill(arr, args.repeat).items():
        print(f"  {name:15s} {seconds * 1e3:6.1f}")


if __name__ == "__main__":
    main()
