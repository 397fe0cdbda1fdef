"""The ``parapipe`` command. It uses only the public API, like any other program would."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import parapipe as pp

__all__ = ["load_graph", "main"]


def load_graph(spec: str) -> Any:
    """Import ``MODULE:NAME``; a callable that is not a stage or graph is called to build one."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise pp.ConfigError(f"expected MODULE:GRAPH (e.g. myapp.graphs:pipeline), got {spec!r}")
    sys.path.insert(0, ".")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, (pp.Stage, pp.Pipeline, pp.Parallel)) and callable(obj):
        built = obj()
        if isinstance(built, (pp.Stage, pp.Pipeline, pp.Parallel)):
            return built
    return obj


def _cmd_plan(args: argparse.Namespace) -> int:
    graph = load_graph(args.graph)
    with pp.Engine(graph, start_method=args.start_method) as engine:
        print(engine.plan())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import _demo

    graph = _demo.graph()
    t0 = time.perf_counter()
    with pp.Engine(graph) as engine:
        ready = time.perf_counter() - t0
        nworkers = len(engine.workers())
        print(engine.plan())
        t1 = time.perf_counter()
        results = list(engine.map(range(args.items), progress=not args.quiet))
        wall = time.perf_counter() - t1
        stats = engine.stats()
    print(
        f"\nstarted {nworkers} workers in {ready:.2f} s; "
        f"{args.items} items in {wall:.2f} s ({args.items / wall:.1f} items/s)"
    )
    print("first result:", json.dumps(results[0]))
    for name, s in stats.items():
        print(f"  {name:10s} done={s['done']:4d} busy={s['busy_s']:.2f}s p50={s['latency_p50_s']}s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parapipe", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="start a graph's workers and print the CPU plan")
    plan.add_argument("graph", help="MODULE:GRAPH, e.g. myapp.graphs:pipeline")
    plan.add_argument("--start-method", default="spawn", choices=["spawn", "forkserver", "fork"])
    plan.set_defaults(func=_cmd_plan)

    demo = sub.add_parser("demo", help="run three CPU-heavy models in parallel with CPU budgets")
    demo.add_argument("--items", type=int, default=24)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except pp.ParapipeError as exc:
        print(f"parapipe: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parapipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
