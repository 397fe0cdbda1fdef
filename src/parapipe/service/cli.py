"""``parapipe serve``: the command line of the HTTP service.

Importing this module is cheap (no FastAPI, no uvicorn), so the main ``parapipe`` command can
add the subcommand unconditionally; the service's dependencies load only when it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .._apps import GRAPH_ALIASES, load_cli_graph
from ..ray import add_backend_arguments, apply_backend_arguments
from .config import (
    ADMIN_KEYS_ENV,
    API_KEYS_ENV,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_CONNECTION_BYTES,
    DEFAULT_CONNECTION_ITEMS,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_JOB_TTL,
    DEFAULT_JOURNAL,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_INFLIGHT_BYTES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    ServiceConfig,
)

__all__ = ["add_serve_command", "configure_parser", "main", "run_from_args"]

log = logging.getLogger("parapipe.service")


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``parapipe`` command's subparsers; its ``func`` runs the server."""
    parser = subparsers.add_parser("serve", help="serve a graph over HTTP (jobs, streaming, dashboard)")
    configure_parser(parser)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``parapipe serve``; sets ``func`` to `run_from_args`.

    Every option but the address ones (``--host``, ``--port``, ``--fd``, ``--log-level``) is a
    `ServiceConfig` field, read by `ServiceConfig.from_args`.
    """
    parser.add_argument("graph", help=f"MODULE:GRAPH (e.g. myapp.graphs:pipeline) or one of {sorted(GRAPH_ALIASES)}")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        metavar="KEY",
        help=f"accepted bearer key (repeatable); visible in `ps`: prefer --api-key-file or {API_KEYS_ENV}",
    )
    parser.add_argument(
        "--api-key-file",
        action="append",
        default=[],
        dest="api_key_files",
        metavar="PATH",
        help=f"file of accepted keys, one a line (repeatable; keys are also read from {API_KEYS_ENV})",
    )
    parser.add_argument(
        "--admin-key-file",
        action="append",
        default=[],
        dest="admin_key_files",
        metavar="PATH",
        help=f"file of admin keys, which see every job (also read from {ADMIN_KEYS_ENV})",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without API keys (only behind an authenticating proxy)",
    )
    parser.add_argument(
        "--journal",
        default=DEFAULT_JOURNAL,
        help="SQLite file of the jobs, resumed on restart; ':memory:' keeps none (default: %(default)s)",
    )
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE, help="unfinished requests before 429")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest request body")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT, help="seconds for /v1/run")
    parser.add_argument("--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT, help="seconds to finish on stop")
    parser.add_argument("--job-ttl", type=float, default=DEFAULT_JOB_TTL, help="seconds finished jobs are kept")
    parser.add_argument(
        "--max-inflight-bytes", type=int, default=DEFAULT_MAX_INFLIGHT_BYTES, help="request body bytes held at once"
    )
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, help="open connections")
    parser.add_argument(
        "--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT, help="seconds to send a request head"
    )
    parser.add_argument(
        "--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT, help="seconds a body may pause between chunks"
    )
    parser.add_argument(
        "--max-header-bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES, help="largest request line and headers"
    )
    parser.add_argument(
        "--connection-items", type=int, default=DEFAULT_CONNECTION_ITEMS, help="queued items per WebSocket"
    )
    parser.add_argument(
        "--connection-bytes", type=int, default=DEFAULT_CONNECTION_BYTES, help="unanswered item bytes per WebSocket"
    )
    parser.add_argument("--cors-origin", action="append", default=[], dest="cors_origins", metavar="ORIGIN")
    parser.add_argument("--allowed-host", action="append", default=None, dest="allowed_hosts", metavar="HOST")
    parser.add_argument("--start-method", default="spawn", choices=["spawn", "forkserver", "fork"])
    add_backend_arguments(parser)
    parser.add_argument("--fd", type=int, default=None, help="serve on this inherited listening socket instead")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the server from parsed options until it is stopped; returns the exit status."""
    from .server import serve

    apply_backend_arguments(args)
    if args.api_keys:
        log.warning(
            "--api-key shows the key to every user of this machine (ps); use --api-key-file or %s", API_KEYS_ENV
        )
    config = ServiceConfig.from_args(args)
    serve(load_cli_graph(args.graph), config, args.host, args.port, fd=args.fd, log_level=args.log_level)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m parapipe.service``: the same options as ``parapipe serve``."""
    from ..errors import ParapipeError

    parser = argparse.ArgumentParser(prog="python -m parapipe.service", description="Serve a parapipe graph over HTTP.")
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except ParapipeError as exc:
        print(f"parapipe serve: {exc}", file=sys.stderr)
        return 2
