"""The plan drawn for people: a table (`format_plan`, one row per worker) and a tree
(`format_tree`, the graph's Pipeline/Parallel shape with each stage's workers under it).

The table says where each worker runs but not how the stages connect; a user reading
``parapipe plan`` wants both. Planning itself is `resources`; this module only draws. Plain text with box-drawing
characters, so it reads the same in a terminal, a log and a bug report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .resources import WorkerBudget

__all__ = ["compact_ids", "format_plan", "format_tree"]


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
    if w.get("nice"):
        text += f"  nice {w['nice']}"
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


_COLUMNS = ("stage", "replica", "pid", "cores", "threads", "gpus")


def format_plan(rows: Iterable[tuple[WorkerBudget, int | None]], pythons: Mapping[str, str] | None = None) -> str:
    """A plain-text table of budgets (and pids once workers run), for ``engine.plan()`` and the CLI.

    ``pid`` is None before the workers start, so a plan can be shown without starting anything.
    ``pythons`` names the interpreter of stages that have their own (``python=``): a column
    then says which runs where. A ``nice`` column appears when a worker runs at a lowered CPU
    priority (`parapipe.priority`).
    """
    rows = list(rows)
    columns: tuple[str, ...] = _COLUMNS
    cells = [_row(budget, pid) for budget, pid in rows]
    if any(budget.nice for budget, _ in rows):
        columns = (*columns, "nice")
        cells = [(*row, str(budget.nice)) for row, (budget, _) in zip(cells, rows, strict=True)]
    if pythons:
        columns = (*columns, "python")
        cells = [(*row, pythons.get(row[0], "-")) for row in cells]
    cells = [columns, *cells]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [_line(row, widths) for row in cells]
    lines.insert(1, _line(tuple("-" * w for w in widths), widths))
    return "\n".join(lines)


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def _row(budget: WorkerBudget, pid: int | None) -> tuple[str, ...]:
    return (
        budget.stage,
        str(budget.replica),
        "-" if pid is None else str(pid),
        compact_ids(budget.cores),
        str(budget.threads),
        compact_ids(budget.gpus) + (f" ({budget.gpu_fraction:g})" if budget.gpu_fraction else ""),
    )


def compact_ids(ids: Iterable[int]) -> str:
    """Write ids the way Linux cpu lists do (``0-3,6``), so long core lists stay readable."""
    runs: list[list[int]] = []
    for i in sorted(set(ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "-"
