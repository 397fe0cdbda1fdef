"""The service's settings: one frozen dataclass, named defaults, and the only reader of its env vars.

`ServiceConfig` is the one list of the service's options: ``parapipe serve`` builds it with
`ServiceConfig.from_args`, Python code builds it directly, and `create_app` and `serve` take it
whole, so an option is declared once and cannot mean different things on different paths.

``PARAPIPE_API_KEYS`` (comma separated) is read here and nowhere else, when a `ServiceConfig` is
made, so a key can never be picked up by one code path and missed by another. Keys given in
code or on the command line are added to the ones in the environment.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .errors import InsecureBind

__all__ = [
    "ADMIN_KEYS_ENV",
    "API_KEYS_ENV",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_CONNECTION_BYTES",
    "DEFAULT_CONNECTION_ITEMS",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_HOST",
    "DEFAULT_JOB_TTL",
    "DEFAULT_JOURNAL",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_INFLIGHT_BYTES",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_PORT",
    "DEFAULT_REQUEST_TIMEOUT",
    "MAX_ITEM_DEPTH",
    "MAX_LONG_POLL",
    "MIN_KEY_LENGTH",
    "STREAM_WINDOW",
    "ServiceConfig",
    "api_keys_from_env",
    "check_bind",
    "is_loopback",
    "keys_from_files",
]

API_KEYS_ENV = "PARAPIPE_API_KEYS"
ADMIN_KEYS_ENV = "PARAPIPE_ADMIN_KEYS"
DEFAULT_HOST = "127.0.0.1"
"""Loopback: a fresh server is reachable from this machine only until keys are configured."""
DEFAULT_PORT = 8000
DEFAULT_MAX_QUEUE = 1024
"""Accepted-but-unfinished requests and jobs; past this, POSTs get 429 instead of piling up memory."""
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
"""64 MiB: a 30-minute uncompressed 16 kHz recording fits; anything larger should be split by the client."""
DEFAULT_REQUEST_TIMEOUT = 300.0
"""Seconds a synchronous /v1/run waits; large items through heavy models need minutes on a small machine."""
DEFAULT_DRAIN_TIMEOUT = 30.0
"""Seconds shutdown waits for running items; the rest stay in the journal and resume on restart."""
DEFAULT_JOURNAL = "parapipe-jobs.db"
"""Jobs are durable by default, from the command line and from `create_app` alike: a 202 promises
that a restart resumes the job. ``":memory:"`` opts out (tests, throwaway servers)."""
DEFAULT_JOB_TTL = 7 * 24 * 3600.0
"""Seconds a finished job (its result or error) stays readable; older ones are pruned. The
payloads of finished and cancelled jobs are dropped at once (at the next prune)."""
DEFAULT_MAX_INFLIGHT_BYTES = 256 * 1024 * 1024
"""Bytes of request bodies being read or held at once, over all connections; past this, 429."""
DEFAULT_MAX_CONNECTIONS = 256
"""Open connections; past this, new ones are closed at once (slowloris, connection floods)."""
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
"""Largest request line plus headers; a larger one gets 431 before auth runs."""
DEFAULT_HEADER_TIMEOUT = 10.0
"""Seconds a connection may take to send a complete request head before it is closed."""
DEFAULT_BODY_TIMEOUT = 60.0
"""Seconds a request body may pause between two chunks before the request gets 408."""
DEFAULT_CONNECTION_ITEMS = 64
"""Items one WebSocket connection may hold in the queue at once, so one client cannot take
every slot of ``max_queue``."""
DEFAULT_CONNECTION_BYTES = 64 * 1024 * 1024
"""Bytes of items one WebSocket connection may have unanswered; past this the server stops
reading it (TCP then slows the client)."""
MAX_ITEM_DEPTH = 64
"""Deepest nesting of lists and objects in a JSON item; deeper bodies get 422 before anything
is queued (a few hundred levels reach Python's recursion limit in pickle and json)."""
MIN_KEY_LENGTH = 16
"""Shortest API key accepted: a short key can be guessed."""
MAX_LONG_POLL = 60.0
"""Longest ``GET /v1/jobs/{id}?wait=`` in seconds, below common proxy idle timeouts."""
KEEP_ALIVE_SECONDS = 5
"""How long the server keeps an idle connection open (uvicorn's default, set explicitly so the
clients can stay below it: see `parapipe.service.client`)."""
STREAM_WINDOW = 64
"""Items in flight per ``WS /v1/stream`` connection, on both ends: the server reads no further
(TCP slows a faster sender), and the clients send this many before they wait for a reply. The
same number on both sides: a client window below the server's leaves the server's idle, one
above it only fills socket buffers."""


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `create_app` and `serve` need besides the graph (and, for `serve`, the address).

    Sequences may be given as any iterable and paths as path-likes; they are stored as tuples and
    strings. Keys from ``PARAPIPE_API_KEYS`` are added to ``api_keys`` here, so every config has
    them, however it was made.

    Attributes:
        api_keys: accepted bearer tokens; empty means no authentication (loopback only, see `check_bind`).
        max_queue: accepted-but-unfinished requests (sync runs, jobs, stream items) before 429.
        max_body_bytes: largest request body or WebSocket message.
        journal_path: SQLite file for jobs (`DEFAULT_JOURNAL`); ``":memory:"`` keeps jobs only while
            the process lives.
        request_timeout: seconds a synchronous run may take before 504.
        drain_timeout: seconds shutdown waits for running items before leaving them to the next start.
        cors_origins: origins allowed to call the API from a browser; empty turns CORS off.
        allowed_hosts: Host header values served. None: any when API keys are set or ``insecure``,
            else loopback names only, which stops DNS-rebinding pages from reaching a keyless
            server. ``("*",)``: any.
        insecure: the network is trusted (an authenticating proxy guards it): `serve` may bind a
            non-loopback address without keys, and any Host the proxy forwards is served.
        engine_options: keyword arguments for `parapipe.Engine` (``start_method``, ``cpus``...).
        admin_keys: keys that see and cancel every job (plus ``PARAPIPE_ADMIN_KEYS``); any other
            key sees only the jobs it submitted. Admin keys are accepted wherever API keys are.
        job_ttl: seconds finished jobs stay readable before they are pruned.
        max_inflight_bytes: bytes of request bodies being read or held at once (all clients).
        max_connections, max_header_bytes, header_timeout, body_timeout: limits of the HTTP server.
        connection_items, connection_bytes: what one WebSocket connection may hold in flight.
        See "Limits and hardening" in docs/service.md for every limit and its default.
    """

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_queue: int = DEFAULT_MAX_QUEUE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    journal_path: str = DEFAULT_JOURNAL
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] | None = None
    insecure: bool = False
    engine_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    job_ttl: float = DEFAULT_JOB_TTL
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    connection_items: int = DEFAULT_CONNECTION_ITEMS
    connection_bytes: int = DEFAULT_CONNECTION_BYTES

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServiceConfig:
        """The config of ``parapipe serve``'s parsed options (see `parapipe.service.cli`)."""
        return cls(
            api_keys=(*args.api_keys, *keys_from_files(args.api_key_files)),
            max_queue=args.max_queue,
            max_body_bytes=args.max_body_bytes,
            journal_path=args.journal,
            request_timeout=args.request_timeout,
            drain_timeout=args.drain_timeout,
            cors_origins=args.cors_origins,
            allowed_hosts=args.allowed_hosts,
            insecure=args.insecure,
            engine_options={"start_method": args.start_method},
            admin_keys=tuple(keys_from_files(args.admin_key_files)),
            job_ttl=args.job_ttl,
            max_inflight_bytes=args.max_inflight_bytes,
            max_connections=args.max_connections,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_header_bytes=args.max_header_bytes,
            connection_items=args.connection_items,
            connection_bytes=args.connection_bytes,
        )

    def served_hosts(self) -> tuple[str, ...] | None:
        """The Host values `OriginGuard` accepts: ``allowed_hosts``, else any when keys or
        ``insecure`` protect the server wherever it is reachable from, else None (loopback names)."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        return ("*",) if self.api_keys or self.insecure else None

    def __post_init__(self) -> None:
        if isinstance(self.api_keys, str) or isinstance(self.admin_keys, str):
            raise ConfigError("api_keys is a list of keys: write api_keys=[key], not api_keys=key")
        admin = api_keys_from_env(self.admin_keys, env_var=ADMIN_KEYS_ENV)
        keys = api_keys_from_env(self.api_keys)
        if any(not key or key != key.strip() or "," in key for key in (*self.api_keys, *self.admin_keys)):
            raise ConfigError("API keys must be non-empty, without commas or surrounding spaces")
        if any(len(key) < MIN_KEY_LENGTH for key in (*keys, *admin)):
            raise ConfigError(
                f"API keys must be at least {MIN_KEY_LENGTH} characters: a short key can be guessed; "
                "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        # Normalised in place: the dataclass is frozen so that nothing changes it after this.
        normal = {
            "api_keys": tuple(dict.fromkeys((*keys, *admin))),
            "admin_keys": admin,
            "journal_path": os.fspath(self.journal_path),
            "cors_origins": tuple(self.cors_origins),
            "allowed_hosts": tuple(self.allowed_hosts) if self.allowed_hosts is not None else None,
            "engine_options": types.MappingProxyType(dict(self.engine_options)),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)
        if self.max_queue < 1:
            raise ConfigError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.request_timeout <= 0 or self.drain_timeout < 0:
            raise ConfigError("request_timeout must be > 0 and drain_timeout >= 0")
        limits = ("max_inflight_bytes", "max_connections", "max_header_bytes", "connection_items", "connection_bytes")
        for name in limits:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if min(self.job_ttl, self.header_timeout, self.body_timeout) < 0:
            raise ConfigError("job_ttl, header_timeout and body_timeout must be >= 0")


def api_keys_from_env(
    explicit: Iterable[str] = (), environ: Mapping[str, str] | None = None, *, env_var: str = API_KEYS_ENV
) -> tuple[str, ...]:
    """The explicit keys plus those in ``env_var`` (``PARAPIPE_API_KEYS``), without duplicates, in order."""
    env = os.environ if environ is None else environ
    from_env = [key.strip() for key in env.get(env_var, "").split(",")]
    return tuple(dict.fromkeys(key for key in (*explicit, *from_env) if key))


def keys_from_files(paths: Iterable[str]) -> list[str]:
    """The keys in the files, one a line; blank lines and ``#`` comments are skipped. A file
    keeps keys out of the process list, where ``--api-key`` shows them to every local user."""
    keys: list[str] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                keys += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except OSError as exc:
            raise ConfigError(f"cannot read the key file {path!r}: {exc.strerror}") from exc
    return keys


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a name or wildcard (0.0.0.0, ::) is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_keys: Iterable[str], insecure: bool) -> None:
    """Refuse to expose an unauthenticated model server beyond this machine.

    Anyone who can reach the port can run the models (and fill the disk with jobs), so a
    non-loopback address needs at least one API key, or an explicit ``insecure=True`` for a
    network that is already trusted (a private container network behind an authenticating proxy).
    """
    if is_loopback(host) or insecure or any(api_keys):
        return
    raise InsecureBind(
        f"refusing to listen on {host!r} without an API key: anyone who can reach it could run the models. "
        f"Set {API_KEYS_ENV}=<key> (or pass --api-key), bind to 127.0.0.1, "
        "or pass --insecure if an authenticating proxy guards this network"
    )
