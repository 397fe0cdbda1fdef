"""Seed 003 (server) by hand: 2 preprocessing processes, a cache process batching up to 128 items
or 1 s, a model process, and queues routing answers back by request id. No HTTP: the caller is
the main process, as in the seed."""

import sys
import time
from multiprocessing import Process, Queue
from queue import Empty

import numpy as np

FEATURES = 64


def preprocess(inq, outq):
    while (req := inq.get()) is not None:
        rid, text = req
        codes = np.frombuffer(text.encode().ljust(FEATURES, b" ")[:FEATURES], dtype=np.uint8)
        spectrum = np.abs(np.fft.rfft(codes.astype(np.float32), n=2 * FEATURES))[:FEATURES]
        outq.put((rid, spectrum / (np.linalg.norm(spectrum) or 1.0)))


def cache(inq, batchq):
    batch, first = [], None
    while True:
        try:
            item = inq.get(timeout=0.05)
        except Empty:
            item = ...
        if item is None:
            break
        if item is not ...:
            batch.append(item)
            first = first or time.monotonic()
        if batch and (len(batch) >= 128 or time.monotonic() - first >= 1.0):
            batchq.put(batch)
            batch, first = [], None
    if batch:
        batchq.put(batch)
    batchq.put(None)


def model(batchq, resultq):
    weights = np.random.default_rng(0).standard_normal((FEATURES, 3)).astype(np.float32)  # loaded in the child
    while (batch := batchq.get()) is not None:
        scores = np.stack([v for _, v in batch]) @ weights
        for (rid, _), s in zip(batch, scores, strict=True):
            resultq.put((rid, {"label": int(s.argmax()), "score": float(s.max()), "batch": len(batch)}))


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    reqs, feats, batches, results = Queue(), Queue(), Queue(), Queue()
    pre = [Process(target=preprocess, args=(reqs, feats)) for _ in range(2)]
    procs = [*pre, Process(target=cache, args=(feats, batches)), Process(target=model, args=(batches, results))]
    for p in procs:
        p.start()
    for i in range(count):
        reqs.put((i, f"request {i}"))
    answers = dict(results.get() for _ in range(count))
    for _ in pre:
        reqs.put(None)
    for p in pre:
        p.join()
    feats.put(None)
    for p in procs:
        p.join()
    print(len(answers), "answers")
