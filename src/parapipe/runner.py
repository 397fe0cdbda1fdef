"""``parapipe run``: a graph over a folder, a file list or an item file, resumable, exactly once.

Every item's outcome is one JSON line in the output file: ``{"key", "result"}`` or
``{"key", "error"}``. Exactly once holds across crashes because two records agree: the journal
knows which items are done (and keeps their results), and the output file is read back at start
so a key already written is never written again; a line cut short by a kill is dropped.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import parapipe as pp

from .engine import StartMethod
from .graph import Node, map_stages

__all__ = ["RunOptions", "discover_items", "run_job"]


@dataclass(frozen=True)
class RunOptions:
    """One ``parapipe run``; ``replicas`` overrides every stage's own, ``namespace`` picks the
    journal's run, and ``retry_failed`` re-runs the items that failed before instead of keeping
    their errors."""

    graph: Node
    inputs: Sequence[str]
    out: str
    journal: str | None = None
    items_file: str | None = None
    glob: str = "*"
    key_field: str = "id"
    replicas: int | None = None
    start_method: StartMethod = "spawn"
    namespace: str = "default"
    progress: bool = False
    retry_failed: bool = False


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
    written = _existing_keys(opts.out, drop_errors=opts.retry_failed)
    todo = [(k, item) for k, item in pairs if k not in written]
    counts = {"results": 0, "errors": 0, "skipped": len(pairs) - len(todo)}
    with pp.Engine(graph, start_method=opts.start_method) as engine, open(opts.out, "a", encoding="utf-8") as out:
        outcomes = engine.map(
            [item for _, item in todo], journal=opts.journal, key=[k for k, _ in todo], namespace=opts.namespace,
            retry_failed=opts.retry_failed, return_exceptions=True, progress=opts.progress,
        )  # fmt: skip
        for (key, _), outcome in zip(todo, outcomes, strict=True):
            out.write(_line(key, outcome) + "\n")
            out.flush()
            counts["errors" if isinstance(outcome, pp.ItemError) else "results"] += 1
    return counts


def _line(key: str, outcome: Any) -> str:
    if isinstance(outcome, pp.ItemError):
        return json.dumps({"key": key, "error": outcome.to_dict()}, default=_jsonable)
    return json.dumps({"key": key, "result": outcome}, default=_jsonable)


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays, sets, paths and bytes in results become plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _existing_keys(out: str, *, drop_errors: bool) -> set[str]:
    """Keys already in the output; a torn last line (killed mid-write) is cut off first."""
    if not os.path.exists(out):
        return set()
    with open(out, "rb") as f:
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    lines = [json.loads(line) for line in complete.splitlines() if line.strip()]
    if drop_errors:
        lines = [line for line in lines if "error" not in line]
    if len(complete) != len(data) or drop_errors:
        _rewrite(out, lines)
    return {line["key"] for line in lines}


def _rewrite(out: str, lines: list[dict[str, Any]]) -> None:
    tmp = f"{out}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    os.replace(tmp, out)
