"""API keys: ``Authorization: Bearer <key>`` on every /v1 route, /metrics and the WebSocket.

Every configured key is compared with `hmac.compare_digest`, and all of them are compared
whatever the outcome, so response timing tells nothing about how much of a guess was right or
which key it was close to. Keys never appear in logs or error messages. `OriginGuard` keeps
web pages of other sites away from a server on this machine.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import ServiceConfig, is_loopback
from .errors import BadRequest, Forbidden, Unauthorized
from .owners import owner_id

__all__ = ["WWW_AUTHENTICATE", "OriginGuard", "caller_owner", "check_key", "key_matches", "refuse"]

WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="parapipe"'}


def key_matches(presented: str, keys: Sequence[str]) -> bool:
    """Constant-time check of one presented key against every configured key."""
    given = presented.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode())
    return found


def check_key(headers: Mapping[str, str], keys: Sequence[str]) -> None:
    """Raise `Unauthorized` unless the headers carry a configured bearer key (or none are configured)."""
    if not keys:
        return
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("this server needs an API key: send the header 'Authorization: Bearer <key>'")
    if not key_matches(token.strip(), keys):
        raise Unauthorized("the API key is not valid for this server")


def caller_owner(headers: Mapping[str, str], config: ServiceConfig) -> str | None:
    """The owner id of the caller's jobs; None for an admin key, which sees every job. Without
    configured keys everyone shares one owner (the server is loopback-only or behind a proxy)."""
    if not config.api_keys:
        return ""
    token = headers.get("authorization", "").partition(" ")[2].strip()
    if config.admin_keys and key_matches(token, config.admin_keys):
        return None
    return owner_id(token)


class OriginGuard:
    """ASGI middleware against cross-site use of a server on this machine.

    * A request whose ``Origin`` is not the server's own (nor a configured CORS origin) is refused:
      any web page can POST a form or open a WebSocket to 127.0.0.1, and without this check it
      could run the models (CSRF, cross-site WebSocket hijacking).
    * Without API keys only loopback ``Host`` names are served, unless hosts are configured: a page
      whose domain resolves to 127.0.0.1 (DNS rebinding) is then same-origin but names its own host.
    """

    def __init__(self, app: ASGIApp, *, cors_origins: Sequence[str], allowed_hosts: Sequence[str] | None) -> None:
        self.app = app
        self.cors_origins = {o.rstrip("/").lower() for o in cors_origins}
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self._decide = functools.lru_cache(maxsize=256)(self._refusal)
        """The answer depends on the host and origin alone, and clients repeat theirs on every request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = self.check(scope["headers"])
            if refusal is not None:
                await refuse(refusal, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> BadRequest | Forbidden | None:
        """Why a request with these headers is refused (400 for two Host headers, 403 for a
        foreign host or origin), or None. One pass over the raw headers: this runs per request."""
        hosts = 0
        host = b""
        origin: bytes | None = None
        for name, value in headers:
            if name == b"host":
                hosts += 1
                host = value
            elif name == b"origin":
                origin = value
        if hosts > 1:  # RFC 9112 section 3.2
            return BadRequest("the request has more than one Host header")
        refusal = self._decide(host.decode("latin-1"), None if origin is None else origin.decode("latin-1"))
        return None if refusal is None else Forbidden(refusal)

    def _refusal(self, host: str, origin: str | None) -> str | None:
        host = host.lower()
        hostname = urlsplit(f"//{host}").hostname or ""
        if self.allowed_hosts is None:
            ok = is_loopback(hostname)
        else:
            ok = "*" in self.allowed_hosts or host in self.allowed_hosts or hostname in self.allowed_hosts
        if not ok:
            return f"this server does not serve the host {host!r}; configure allowed_hosts to add it"
        if origin is None:
            return None
        origin = origin.rstrip("/").lower()
        if origin in self.cors_origins or urlsplit(origin).netloc == host:
            return None
        return f"requests from web pages at {origin!r} are refused; add the origin to cors_origins to allow it"


async def refuse(error: BadRequest | Forbidden, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer `OriginGuard.check`'s refusal: a JSON error over HTTP (a bad request also closes
    the connection), a close code on a WebSocket."""
    if scope["type"] == "websocket":
        code = 1002 if error.status == 400 else 1008
        await send({"type": "websocket.close", "code": code, "reason": error.message[:120]})
        return
    headers = {"Connection": "close"} if error.status == 400 else None
    response = JSONResponse({"error": error.to_dict()}, status_code=error.status, headers=headers)
    await response(scope, receive, send)
