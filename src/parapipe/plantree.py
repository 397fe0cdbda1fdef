"""The plan as a tree: the graph's Pipeline/Parallel shape with each stage's workers under it.

``engine.plan()`` is a table, one row per worker, which says where each worker runs but not how
the stages connect; a user reading ``parapipe plan`` wants both. Plain text with box-drawing
characters, so it reads the same in a terminal, a log and a bug report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .resources import compact_ids

__all__ = ["format_tree"]


def format_tree(shape: Mapping[str, Any], workers: Iterable[Mapping[str, Any]]) -> str:
    """The tree of ``shape`` (from `parapipe.graph.graph_shape`), with the rows of
    ``engine.workers()`` under their stages (none before the workers start)."""
    by_stage: dict[str, list[Mapping[str, Any]]] = {}
    for w in workers:
        by_stage.setdefault(str(w["stage"]), []).append(w)
    head, children = _node(shape, None, by_stage)
    return "\n".join([head, *_lines(children, "")])


_Tree = tuple[str, list[Any]]


def _node(shape: Mapping[str, Any], branch: str | None, by_stage: dict[str, list[Mapping[str, Any]]]) -> _Tree:
    """One node's label and its children, each a (label, children) pair."""
    if "stage" in shape:
        name = str(shape["stage"])
        rows = sorted(by_stage.get(name, []), key=lambda w: w["replica"])
        label = name if branch in (None, name) else f"{branch}: {name}"
        replicas = f"{len(rows)} replica{'s' if len(rows) != 1 else ''}"
        return f"{label}  ({replicas})" if rows else label, [(_worker(w), []) for w in rows]
    prefix = f"{branch}: " if branch else ""
    if "pipeline" in shape:
        return f"{prefix}Pipeline", [_node(step, None, by_stage) for step in shape["pipeline"]]
    return f"{prefix}Parallel", [_node(child, name, by_stage) for name, child in shape["parallel"].items()]


def _worker(w: Mapping[str, Any]) -> str:
    threads = int(w["threads"])
    text = f"replica {w['replica']}  pid {w.get('pid') or '-'}  cores {compact_ids(w['cores'])}"
    text += f"  {threads} thread{'s' if threads != 1 else ''}"
    if w.get("gpus"):
        text += f"  gpus {compact_ids(w['gpus'])}"
        if w.get("gpu_fraction"):
            text += f" ({w['gpu_fraction']:g} of memory)"
        if w.get("gpu_memory_bytes") is not None:
            text += f"  {w['gpu_memory_bytes'] / 2**30:.1f} GiB used"
    if w.get("python"):
        text += f"  python {w['python']}"
    return text


def _lines(children: list[_Tree], indent: str) -> list[str]:
    lines = []
    for i, (label, grandchildren) in enumerate(children):
        last = i == len(children) - 1
        lines.append(f"{indent}{'└── ' if last else '├── '}{label}")
        lines += _lines(grandchildren, indent + ("    " if last else "│   "))
    return lines
