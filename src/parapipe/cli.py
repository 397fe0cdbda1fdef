"""The ``parapipe`` command. It uses only the public API, like any other program would."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import parapipe as pp

from ._apps import load_cli_graph
from .graph import graph_shape
from .plantree import format_tree
from .ray import add_backend_arguments, apply_backend_arguments

__all__ = ["main"]

_START_METHODS = ["spawn", "forkserver", "fork"]
_START_METHOD_HELP = "how worker processes start (default: spawn, the one safe with CUDA)"


def _cmd_plan(args: argparse.Namespace) -> int:
    graph = load_cli_graph(args.graph)
    with pp.Engine(graph, start_method=args.start_method) as engine:
        print(format_tree(graph_shape(engine.graph), engine.workers()))
        print()
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
        results = list(engine.map(range(args.count), progress=not args.quiet))
        wall = time.perf_counter() - t1
        stats = engine.stats()
    print(
        f"\nstarted {nworkers} workers in {ready:.2f} s; "
        f"{args.count} items in {wall:.2f} s ({args.count / wall:.1f} items/s)"
    )
    print("first result:", json.dumps(results[0]))
    for name, s in stats.items():
        print(f"  {name:10s} done={s['done']:4d} busy={s['busy_s']:.2f}s p50={s['latency_p50_s']}s")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import RunOptions, run_job

    if not args.inputs and not args.items:
        raise pp.ConfigError("give input files/directories, or --items FILE")
    opts = RunOptions(
        graph=load_cli_graph(args.graph), inputs=args.inputs, out=args.out, journal=args.journal,
        items_file=args.items, glob=args.glob, key_field=args.key_field, replicas=args.replicas,
        start_method=args.start_method, namespace=args.namespace, progress=args.progress,
        retry_failed=args.retry_failed, sink=args.sink,
    )  # fmt: skip
    if args.follow:
        from .follow import follow_job

        counts = follow_job(opts)
        print(f"stopped: {counts['results']} results, {counts['errors']} errors written to {args.out}")
        return 0
    counts = run_job(opts)
    into = args.out or args.sink
    print(f"{counts['results']} results, {counts['errors']} errors, {counts['skipped']} already in {into}")
    return 1 if counts["errors"] else 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    from .journal import State, format_counts, is_postgres_url, open_journal

    if args.journal == "add":
        return _jobs_add(args)
    if args.add:
        raise pp.ConfigError(f"unexpected arguments {args.add}; to queue items: parapipe jobs add JOURNAL ITEM...")
    if not is_postgres_url(args.journal) and not os.path.isfile(args.journal):
        # Opening would create an empty journal, and a mistyped path would then read as "0 items".
        raise pp.ConfigError(
            f"journal {args.journal!r} does not exist; journals are made by `parapipe run ... --journal FILE` "
            "(or Engine.map(journal=FILE)), so check the path"
        )
    with open_journal(args.journal, run=args.namespace) as journal:
        known = journal.runs()
        if known and args.namespace not in known:
            raise pp.ConfigError(
                f"journal {args.journal!r} has no namespace {args.namespace!r}; pick one of {known} with --namespace"
            )
        if args.retry_failed:
            print(f"requeued {journal.requeue_failed()} failed items; run the same `parapipe run` again")
        print(format_counts(journal))
        state = State(args.state) if args.state else None
        for rec in journal.records(state, limit=args.limit) if args.state or args.list else []:
            error = f"  {rec.error.get('type')}: {rec.error.get('message')}" if rec.error else ""
            print(f"{rec.state.value:9s} attempts={rec.attempts}  {rec.key}{error}")
    return 0


def _jobs_add(args: argparse.Namespace) -> int:
    """``parapipe jobs add JOURNAL ITEM... [--items FILE]``: queue items (their payloads) for a
    follower (``parapipe run --follow``); keys already in the namespace are left as they are."""
    from .journal import open_journal
    from .runner import read_items_file

    if not args.add:
        raise pp.ConfigError("usage: parapipe jobs add JOURNAL ITEM... (or --items FILE)")
    target, *items = args.add
    pairs = [(item, item) for item in items]
    if args.items:
        pairs += read_items_file(args.items, args.key_field)
    if not pairs:
        raise pp.ConfigError("nothing to add: give items after the journal, or --items FILE")
    with open_journal(target, run=args.namespace) as journal:
        existing = journal.add([key for key, _ in pairs], payloads=[item for _, item in pairs])
    print(f"queued {len(pairs) - len(existing)} items, {len(existing)} already in namespace {args.namespace!r}")
    return 0


class _Renamed(argparse.Action):
    """A flag's old name: hidden from ``--help`` and still accepted, with a one-line note on stderr,
    so that scripts written against it keep working until they are updated."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"parapipe: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_renamed(parser: argparse.ArgumentParser, old: str, new: str, **kwargs: Any) -> None:
    """Accept ``old`` as a deprecated spelling of the option ``new`` (added before it)."""
    parser.add_argument(old, dest=new.lstrip("-").replace("-", "_"), action=_Renamed, new=new, **kwargs)


def _register_optional(sub: Any) -> None:
    """Command groups of optional extras; each tells how to install it when missing."""
    try:
        from .audio.cli import register
    except ImportError as exc:
        reason = str(exc)
        missing = sub.add_parser("audio", help="speech analysis (needs: pip install 'parapipe[audio]')")
        missing.set_defaults(func=lambda _args: _missing_extra("audio", reason))
    else:
        register(sub)
    from .service.cli import add_serve_command  # cheap: FastAPI loads only when serving

    add_serve_command(sub)


def _missing_extra(extra: str, reason: str) -> int:
    print(f"parapipe: this command needs the {extra} extra ({reason}); see README.md for the install command",
          file=sys.stderr)  # fmt: skip
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parapipe", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="start a graph's workers and print the graph as a tree and the CPU plan")
    plan.add_argument("graph", help="MODULE:GRAPH, e.g. myapp.graphs:pipeline")
    plan.add_argument("--start-method", default="spawn", choices=_START_METHODS, help=_START_METHOD_HELP)
    add_backend_arguments(plan)
    plan.set_defaults(func=_cmd_plan)

    run = sub.add_parser("run", help="run a graph over files, directories or an item file; resumable")
    run.add_argument("graph", help="MODULE:GRAPH")
    run.add_argument("inputs", nargs="*", help="files or directories (searched recursively)")
    run.add_argument("--out", help="output file, one record per item: .jsonl, .csv or .parquet (needs pyarrow)")
    run.add_argument("--sink", help="MODULE:NAME of your own sink class or write(key, outcome) function")
    run.add_argument("--journal", help="SQLite file or postgresql:// URL: rerunning resumes, runners share it")
    run.add_argument("--items", help="a .txt, .csv or .jsonl file of items")
    run.add_argument("--glob", default="*", help="file pattern inside directories (default: *)")
    run.add_argument("--key-field", default="id", help="field naming CSV/JSONL items (default: id)")
    run.add_argument("--replicas", type=int, help="replicas (worker processes) for every stage")
    _add_renamed(run, "--workers", "--replicas", type=int)
    run.add_argument("--namespace", default="default", help="journal namespace (default: default)")
    run.add_argument("--start-method", default="spawn", choices=_START_METHODS, help=_START_METHOD_HELP)
    add_backend_arguments(run)
    run.add_argument("--progress", action="store_true", help="show a progress bar")
    run.add_argument("--retry-failed", action="store_true",
                     help="re-run the items that failed before (by default they keep their error)")  # fmt: skip
    run.add_argument("--follow", action="store_true",
                     help="keep running items queued in the journal (parapipe jobs add) until Ctrl-C")  # fmt: skip
    run.set_defaults(func=_cmd_run)

    jobs = sub.add_parser("jobs", help="show a journal's item states and counts; `jobs add JOURNAL ITEM...` queues")
    jobs.add_argument("journal", help="the SQLite journal file or postgresql:// URL (or `add`)")
    jobs.add_argument("add", nargs="*", metavar="ITEM", help="after `add`: the journal, then the items to queue")
    jobs.add_argument("--items", help="with `add`: a .txt, .csv or .jsonl file of items to queue")
    jobs.add_argument("--key-field", default="id", help="field naming CSV/JSONL items (default: id)")
    jobs.add_argument("--namespace", default="default", help="journal namespace (default: default)")
    _add_renamed(jobs, "--run", "--namespace")
    jobs.add_argument("--state", choices=["queued", "running", "done", "failed", "cancelled"], help="list these")
    jobs.add_argument("--list", action="store_true", help="list every item")
    jobs.add_argument("--limit", type=int, default=100)
    jobs.add_argument("--retry-failed", action="store_true", help="requeue failed items for the next run")
    jobs.set_defaults(func=_cmd_jobs)

    _register_optional(sub)

    demo = sub.add_parser("demo", help="run three CPU-heavy models in parallel with CPU budgets")
    demo.add_argument("--count", type=int, default=24, help="how many items to run (default: 24)")
    _add_renamed(demo, "--items", "--count", type=int)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    apply_backend_arguments(args)
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
