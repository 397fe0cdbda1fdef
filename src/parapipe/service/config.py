"""The service's settings: one frozen dataclass, named defaults, and the only reader of its env vars.

``PARAPIPE_API_KEYS`` (comma separated) is read here and nowhere else, so a key can never be
picked up by one code path and missed by another. Keys given in code or on the command line
are added to the ones in the environment.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError
from .errors import InsecureBind

__all__ = [
    "API_KEYS_ENV",
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_PORT",
    "DEFAULT_REQUEST_TIMEOUT",
    "ServiceConfig",
    "api_keys_from_env",
    "check_bind",
    "is_loopback",
]

API_KEYS_ENV = "PARAPIPE_API_KEYS"
DEFAULT_HOST = "127.0.0.1"
"""Loopback: a fresh server is reachable from this machine only until keys are configured."""
DEFAULT_PORT = 8000
DEFAULT_MAX_QUEUE = 1024
"""Accepted-but-unfinished requests and jobs; past this, POSTs get 429 instead of piling up memory."""
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
"""64 MiB: a 30-minute 16 kHz WAV fits; anything larger should be split by the client."""
DEFAULT_REQUEST_TIMEOUT = 300.0
"""Seconds a synchronous /v1/run waits; long speech files need minutes on a small machine."""
DEFAULT_DRAIN_TIMEOUT = 30.0
"""Seconds shutdown waits for running items; the rest stay in the journal and resume on restart."""
MAX_LONG_POLL = 60.0
"""Longest ``GET /v1/jobs/{id}?wait=`` in seconds, below common proxy idle timeouts."""


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `create_app` needs besides the graph.

    Attributes:
        api_keys: accepted bearer tokens; empty means no authentication (loopback only, see `check_bind`).
        max_queue: accepted-but-unfinished requests (sync runs, jobs, stream items) before 429.
        max_body_bytes: largest request body or WebSocket message.
        journal_path: SQLite file for jobs; ``":memory:"`` keeps jobs only while the process lives.
        request_timeout: seconds a synchronous run may take before 504.
        drain_timeout: seconds shutdown waits for running items before leaving them to the next start.
        cors_origins: origins allowed to call the API from a browser; empty turns CORS off.
        allowed_hosts: Host header values served. None: any when API keys are set, else loopback
            names only, which stops DNS-rebinding pages from reaching a keyless server. ``("*",)``: any.
    """

    api_keys: tuple[str, ...] = ()
    max_queue: int = DEFAULT_MAX_QUEUE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    journal_path: str = ":memory:"
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    cors_origins: tuple[str, ...] = field(default=())
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ConfigError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.request_timeout <= 0 or self.drain_timeout < 0:
            raise ConfigError("request_timeout must be > 0 and drain_timeout >= 0")
        if any(not key or key != key.strip() or "," in key for key in self.api_keys):
            raise ConfigError("API keys must be non-empty, without commas or surrounding spaces")


def api_keys_from_env(explicit: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The explicit keys plus those in ``PARAPIPE_API_KEYS``, without duplicates, in order."""
    env = os.environ if environ is None else environ
    from_env = [key.strip() for key in env.get(API_KEYS_ENV, "").split(",")]
    return tuple(dict.fromkeys(key for key in (*explicit, *from_env) if key))


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
