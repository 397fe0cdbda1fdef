"""``parapipe run``: a graph over a folder, a file list or an item file, resumable, exactly once.

Every item's outcome goes to a sink (`parapipe.sinks`): a JSON lines, CSV or Parquet file
chosen by ``--out``'s extension, or the user's own ``--sink``. Exactly once holds across crashes
because two records agree: the journal knows which items are done (and keeps their results), and
the sink says which keys it already holds, so a key already written is never written again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import parapipe as pp

from .engine import StartMethod
from .graph import Node, map_stages
from .sinks import open_sink, written_keys

__all__ = ["RunOptions", "discover_items", "run", "run_job"]


@dataclass(frozen=True)
class RunOptions:
    """One ``parapipe run``; ``replicas`` overrides every stage's own, ``namespace`` picks the
    journal's run, ``retry_failed`` re-runs the items that failed before instead of keeping
    their errors, and ``sink`` (``MODULE:NAME``) replaces the file sink ``out`` would pick."""

    graph: Node
    inputs: Sequence[str]
    out: str | None
    journal: str | None = None
    items_file: str | None = None
    glob: str = "*"
    key_field: str = "id"
    replicas: int | None = None
    start_method: StartMethod = "spawn"
    namespace: str = "default"
    progress: bool = False
    retry_failed: bool = False
    sink: str | None = None


def discover_items(inputs: Sequence[str], glob: str = "*") -> list[tuple[str, Any]]:
    """(key, item) for every file given or found under a directory; the item is the path."""
    found: list[tuple[str, Any]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found += [(str(p), str(p)) for p in sorted(path.rglob(glob)) if p.is_file()]
        elif path.exists():
            found.append((str(path), str(path)))
        else:
            raise pp.ConfigError(f"input {raw!r} does not exist")
    return found


def read_items_file(path: str, key_field: str = "id") -> list[tuple[str, Any]]:
    """(key, item) from a .jsonl, .csv or text file (one item per line)."""
    text = Path(path).read_text(encoding="utf-8")
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        rows: list[Any] = [json.loads(line) for line in text.splitlines() if line.strip()]
    elif suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        return [(line, line) for line in (x.strip() for x in text.splitlines()) if line]
    return [(_row_key(row, key_field, i), row) for i, row in enumerate(rows)]


def _row_key(row: Any, key_field: str, line: int) -> str:
    if isinstance(row, dict) and key_field in row:
        return str(row[key_field])
    return f"line-{line + 1}"


def run_job(opts: RunOptions) -> dict[str, int]:
    """Run the graph over the inputs; return counts of results written, errors and skipped keys."""
    pairs = read_items_file(opts.items_file, opts.key_field) if opts.items_file else []
    pairs += discover_items(opts.inputs, opts.glob)
    graph = opts.graph
    if opts.replicas:
        graph = map_stages(pp.Pipeline(graph) if not isinstance(graph, (pp.Pipeline, pp.Parallel)) else graph,
                           lambda s: s.options(replicas=opts.replicas))  # fmt: skip
    return _run_pairs(
        graph, pairs, out=opts.out, sink=opts.sink, journal=opts.journal, namespace=opts.namespace,
        retry_failed=opts.retry_failed, progress=opts.progress, start_method=opts.start_method,
    )  # fmt: skip


def run(
    graph: Node | Any,
    items: Iterable[Any],
    *,
    key: Callable[[Any], Any] | Iterable[Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    sink: Any = None,
    journal: str | os.PathLike[str] | None = None,
    namespace: str = "default",
    retry_failed: bool = False,
    progress: bool | str = False,
    start_method: StartMethod = "spawn",
) -> dict[str, int]:
    """``parapipe run`` from Python: run ``graph`` over ``items`` and write each outcome to a
    sink once, however often the run is killed and started again.

    Args:
        key: names each item (a function of it, or keys aligned with ``items``); default: its
            position. Keys must be stable across reruns: they are what resume matches on.
        out: the output file; its extension picks the sink (.jsonl, .csv, .parquet).
        sink: a `Sink` object or class, a ``write(key, outcome)`` function, or ``"MODULE:NAME"``
            naming one (see docs/sinks.md); a class is made with ``out``.
        journal: a SQLite file: a rerun skips done items and writes their stored results.
        namespace, retry_failed, progress, start_method: as for ``Engine.map`` and ``Engine``.

    Returns:
        ``{"results", "errors", "skipped"}``: outcomes written now, and keys the sink already had.
    """
    items = list(items)
    if key is None:
        names = [str(i) for i in range(len(items))]
    elif callable(key):
        names = [str(key(item)) for item in items]
    else:
        names = [str(k) for k in key]
    if len(names) != len(items):
        raise pp.ConfigError(f"run got {len(items)} items but {len(names)} keys")
    return _run_pairs(
        graph, list(zip(names, items, strict=True)), out=out, sink=sink, journal=journal, namespace=namespace,
        retry_failed=retry_failed, progress=progress, start_method=start_method,
    )  # fmt: skip


def _run_pairs(
    graph: Any,
    pairs: list[tuple[str, Any]],
    *,
    out: str | os.PathLike[str] | None,
    sink: Any,
    journal: str | os.PathLike[str] | None,
    namespace: str,
    retry_failed: bool,
    progress: bool | str,
    start_method: StartMethod,
) -> dict[str, int]:
    """The one writer: outcomes come back as they finish, each key not already in the sink is
    written once, and the sink is closed however the run ends (Ctrl-C included)."""
    ledger = f"{os.fspath(journal)}.{namespace}.keys" if out is None and journal is not None else None
    target = open_sink(out, sink, retry_failed=retry_failed, ledger=ledger)
    try:
        written = written_keys(target)
        todo = [(k, item) for k, item in pairs if k not in written]
        counts = {"results": 0, "errors": 0, "skipped": len(pairs) - len(todo)}
        with pp.Engine(graph, start_method=start_method) as engine:
            outcomes = engine.map(
                [item for _, item in todo], key=[k for k, _ in todo], journal=journal, namespace=namespace,
                retry_failed=retry_failed, return_exceptions=True, progress=progress, ordered=False, with_keys=True,
            )  # fmt: skip
            with contextlib.ExitStack() as stack:  # closed first: the journal writes land before the engine stops
                stack.callback(getattr(outcomes, "close", lambda: None))
                for key, outcome in outcomes:
                    target.write(key, outcome)
                    counts["errors" if isinstance(outcome, pp.ItemError) else "results"] += 1
    finally:
        target.close()
    return counts
