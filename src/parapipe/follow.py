"""``parapipe run --follow``: a long-running consumer of a journal's queue (the seed's DB task pool).

The items live in the journal with their payloads: the command's own inputs are added first,
then whatever ``parapipe jobs add``, ``Journal.add(keys, payloads=...)`` or plain SQL queues
later. The loop claims up to a window of queued items (`JobStore.claim_next`: one transaction,
so several followers, on several machines with PostgreSQL, never take the same item), runs them
through the engine, and writes each outcome to the output once it is committed. With nothing
to claim it prints ``waiting for new items`` and waits: on PostgreSQL for a NOTIFY (instant),
on SQLite for ``poll`` seconds at most, since another process's commit cannot wake it.

The output gets one JSON line per item this follower finished, written after its outcome is
committed: a key is never written twice (a done item is never claimed again), though a kill
between the commit and the write leaves that one line out; the journal has every outcome
(``parapipe jobs JOURNAL --state done``).

Ctrl-C stops claiming, lets the items in flight finish and be recorded, and gives back the rest
(queued again, for the next follower). A second Ctrl-C stops at once; the unfinished items'
leases then run out, or a follower on this machine sees their owner is gone and takes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import parapipe as pp

from .journal import open_journal
from .mapper import window_size
from .recovery import JournaledRunner
from .runner import RunOptions, discover_items, read_items_file

__all__ = ["DEFAULT_POLL", "follow_job"]

DEFAULT_POLL = 1.0
"""Seconds a SQLite follower waits between two looks for new items."""


def follow_job(opts: RunOptions, *, poll: float = DEFAULT_POLL) -> dict[str, int]:
    """Run the journal's queued items until Ctrl-C; returns counts of results and errors written."""
    if not opts.journal:
        raise pp.ConfigError("--follow needs --journal: the followed queue lives in the journal")
    if opts.out is None:
        raise pp.ConfigError("--follow writes JSON lines as items finish: give --out FILE.jsonl")
    out_path = opts.out
    pairs = read_items_file(opts.items_file, opts.key_field) if opts.items_file else []
    pairs += discover_items(opts.inputs, opts.glob)
    counts = {"results": 0, "errors": 0, "skipped": 0}
    with open_journal(opts.journal, run=opts.namespace, max_result_bytes=None) as store:
        if pairs:
            store.add([key for key, _ in pairs], payloads=[item for _, item in pairs])
        _cut_torn_line(out_path)
        engine = pp.Engine(opts.graph, start_method=opts.start_method)
        with engine, open(out_path, "a", encoding="utf-8") as out:
            runner = JournaledRunner(store, lambda item, key, _, retry: engine.submit(item, key=key, on_retry=retry))
            loop = _Loop(store, runner, window_size(len(engine.workers())), poll)
            try:
                loop.run(out, counts)
            except KeyboardInterrupt:
                loop.finish(out, counts)
            finally:
                runner.close()
    return counts


class _Loop:
    def __init__(self, store: Any, runner: JournaledRunner, window: int, poll: float) -> None:
        self._store = store
        self._runner = runner
        self._window = window
        self._poll = poll
        self._finished: queue.SimpleQueue[tuple[str, Future[Any]]] = queue.SimpleQueue()
        self._inflight = 0

    def run(self, out: Any, counts: dict[str, int]) -> None:
        idle = False
        while True:
            claimed = self._store.claim_next(self._window - self._inflight) if self._inflight < self._window else []
            for record in claimed:
                future = self._runner.submit(record.payload, record.key, claimed=True)
                future.add_done_callback(self._landed(record.key))
                self._inflight += 1
            if claimed:
                idle = False
            elif self._inflight == 0:
                if not idle:
                    print(f"waiting for new items ({counts['results']} results, {counts['errors']} errors)", flush=True)
                    idle = True
                self._wait_for_items()
                continue
            self._drain(out, counts, block=not claimed)

    def _landed(self, key: str) -> Callable[[Future[Any]], None]:
        return lambda future: self._finished.put((key, future))

    def finish(self, out: Any, counts: dict[str, int]) -> None:
        """After Ctrl-C: record and write what is in flight; claim nothing more."""
        while self._inflight:
            self._drain(out, counts, block=True)

    def _wait_for_items(self) -> None:
        wait = getattr(self._store, "wait_for_items", None)
        if wait is not None:
            wait(self._poll * 30)  # a NOTIFY wakes it at once; the timeout only bounds a lost one
        else:
            # Nothing is in flight, so nothing lands here: a bounded wait for new rows.
            with contextlib.suppress(queue.Empty):
                self._finished.get(timeout=self._poll)

    def _drain(self, out: Any, counts: dict[str, int], *, block: bool) -> None:
        """Write the outcomes that arrived (waiting up to ``poll`` for the first when ``block``)."""
        try:
            landed = [self._finished.get(timeout=self._poll) if block else self._finished.get_nowait()]
        except queue.Empty:
            return
        while True:
            try:
                landed.append(self._finished.get_nowait())
            except queue.Empty:
                break
        for key, future in landed:
            self._inflight -= 1
            if future.cancelled():
                continue
            outcome = future.exception() or future.result()
            if isinstance(outcome, pp.JournalError):
                raise outcome
            out.write(_line(key, outcome) + "\n")
            out.flush()
            counts["errors" if isinstance(outcome, pp.ItemError) else "results"] += 1


def _line(key: str, outcome: Any) -> str:
    if isinstance(outcome, pp.ItemError):
        return json.dumps({"key": key, "error": outcome.to_dict()}, default=str)
    return json.dumps({"key": key, "result": outcome}, default=_jsonable)


def _jsonable(value: Any) -> Any:
    """numpy values become lists and numbers; anything else JSON cannot hold, its ``str``."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _cut_torn_line(out: str) -> None:
    """Drop a last line cut short by a kill, so the next line starts on its own."""
    if not os.path.exists(out):
        return
    with open(out, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
