"""What crosses the HTTP boundary: request bodies into items, results into JSON.

With the default adapter (`parapipe.service.adapters`) a request body becomes one item::

    application/json          {"item": <any JSON>}    ->  the JSON value
    multipart/form-data       field "file"            ->  the file's bytes
    application/octet-stream  the raw body            ->  the bytes

An application's adapter may read bodies its own way from the same parts: `media_type`,
`read_upload` (the bytes and base name of an upload, for graphs that take files only).

Results become JSON with `to_jsonable`; a result with no JSON form fails its request or job
with `ResultNotSerializable` instead of failing later inside the response encoder.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import enum
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import MAX_ITEM_DEPTH
from .errors import BadRequest, Overloaded, ResultNotSerializable, error_body

__all__ = [
    "BODY_BYTES",
    "JSON",
    "MULTIPART",
    "OCTETS",
    "UPLOAD_FIELD",
    "BodyLimit",
    "ByteBudget",
    "check_item",
    "json_item",
    "media_type",
    "parse_json",
    "read_item",
    "read_upload",
    "refuse_body",
    "to_jsonable",
]

JSON = "application/json"
MULTIPART = "multipart/form-data"
OCTETS = "application/octet-stream"
UPLOAD_FIELD = "file"
_NO_NAME = "<upload>"


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower case ("" when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_item(request: Request) -> Any:
    """The item a POST body carries (see the module docstring); `BadRequest` when malformed."""
    media = media_type(request)
    if media == JSON:
        return json_item(await request.body())
    if media not in (MULTIPART, OCTETS):
        raise _unsupported(media, f'{JSON} with {{"item": ...}}')
    data, _ = await read_upload(request)
    return data


async def read_upload(request: Request) -> tuple[bytes, str]:
    """The bytes of a multipart upload or a raw body, and the upload's base name (a label that
    is never opened; ``"<upload>"`` without one). 415 for any other Content-Type."""
    media = media_type(request)
    if media == MULTIPART:
        return await _upload(request)
    if media == OCTETS:
        return await request.body(), _NO_NAME
    raise _unsupported(media)


def _unsupported(media: str, *also: str) -> BadRequest:
    accepted = [*also, f"{MULTIPART} with a {UPLOAD_FIELD!r} field", OCTETS]
    return BadRequest(
        f"unsupported Content-Type {media or '(none)'!r}: send {', '.join(accepted[:-1])} or {accepted[-1]}",
        status=415,
    )


def json_item(body: bytes) -> Any:
    """The item of a ``{"item": ...}`` body: `BadRequest` when malformed (see `parse_json`), 422 for another shape."""
    doc = parse_json(body)
    if not isinstance(doc, dict) or set(doc) != {"item"}:
        raise BadRequest('the JSON body must be an object with exactly one key, "item"', status=422)
    return doc["item"]


def parse_json(text: str | bytes) -> Any:
    """One JSON document as an item: `BadRequest` when it is malformed, nested deeper than
    `MAX_ITEM_DEPTH` (422) or holds a lone surrogate, which has no UTF-8 form (400). Checked
    here, before anything is queued: a few hundred levels reach Python's recursion limit in
    pickle and json, in whichever thread meets the item next."""
    try:
        doc = json.loads(text)
    except RecursionError:
        raise BadRequest(f"the item is nested deeper than the limit of {MAX_ITEM_DEPTH} levels", status=422) from None
    except ValueError as exc:
        raise BadRequest(f'the body is not valid JSON ({exc}); send {{"item": <any JSON>}}') from None
    check_item(doc)
    return doc


def check_item(value: Any, max_depth: int = MAX_ITEM_DEPTH) -> None:
    """Refuse a JSON value nested deeper than ``max_depth`` or holding a lone surrogate (without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, (list, dict)):
            if depth >= max_depth:
                raise BadRequest(f"the item is nested deeper than the limit of {max_depth} levels", status=422)
            children = list(node.items()) if isinstance(node, dict) else node
            for child in children:
                if isinstance(child, tuple):
                    _check_text(child[0])
                    child = child[1]
                if isinstance(child, (str, list, dict)):
                    stack.append((child, depth + 1))


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("the item holds a lone UTF-16 surrogate, which has no UTF-8 form") from None


async def _upload(request: Request) -> tuple[bytes, str]:
    """The bytes and base name of the one uploaded file; the name is a label, never opened."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    try:
        form = await request.form(max_files=1, max_fields=8)
    except HTTPException as exc:  # starlette's verdict on a broken multipart body
        raise BadRequest(f"malformed multipart body: {exc.detail}") from exc
    upload = form.get(UPLOAD_FIELD)
    if not isinstance(upload, UploadFile):
        await form.close()
        raise BadRequest(f"the multipart body needs a file field named {UPLOAD_FIELD!r}", status=422)
    try:
        data = await upload.read()
    finally:
        await form.close()
    return data, os.path.basename(upload.filename or "") or _NO_NAME


def to_jsonable(value: Any) -> Any:
    """The value as plain JSON: numpy arrays and scalars become lists and numbers, tuples lists,
    dataclasses dicts, bytes ``{"base64": ...}``, and NaN/infinity null (JSON has neither).

    `ResultNotSerializable` for a value with no JSON form, one nested too deeply for the
    encoders, or a string with a lone surrogate (no UTF-8 form).
    """
    try:
        return _jsonable(value)
    except RecursionError:
        raise ResultNotSerializable("the graph returned a value nested too deeply to encode as JSON") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ResultNotSerializable("the graph returned a string with a lone surrogate") from None
        return value.value if isinstance(value, enum.Enum) else value
    if value is None or isinstance(value, (bool, int)):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return _jsonable(value.tolist())
    raise ResultNotSerializable(
        f"the graph returned a {type(value).__name__}, which has no JSON form; "
        "return dicts, lists, numbers, strings or numpy arrays"
    )


class ByteBudget:
    """Bytes of request bodies held at once: bodies being read, and the items of accepted jobs
    until they end. Touched only from the event loop thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes, or raise `Overloaded` (429)."""
        if size and self.used + size > self.limit:
            raise Overloaded(
                f"request bodies and queued jobs hold {self.used} bytes (limit {self.limit}); retry later",
                retry_after=1,
            )
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


BODY_BYTES = "parapipe_body_bytes"
"""Key in the request's ``state``: the bytes of its body `BodyLimit` read (a one-element list)."""


class BodyLimit:
    """ASGI middleware: bounds what request bodies may hold, before and while they are read.

    * A body over ``max_bytes`` gets 413: a declared ``Content-Length`` before a byte is read, a
      chunked one as soon as it passes the limit.
    * All bodies together hold at most ``budget``'s bytes (a declared length is reserved up
      front, a chunked body as it arrives, both until its request ends): past it, 429, so twenty
      half-sent uploads cannot hold a gigabyte between them. Accepted jobs hold their bytes in
      the same budget until they end (`parapipe.service.jobs`).
    * A body that pauses longer than ``body_timeout`` between two chunks gets 408.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, budget: ByteBudget, body_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            held = self.reserve(scope["headers"])
        except (BadRequest, Overloaded) as exc:
            await refuse_body(exc, scope, receive, send)
            return
        scope.setdefault("state", {})[BODY_BYTES] = held
        try:
            await self.app(scope, self.counting(receive, held), send)
        finally:
            self.budget.give(held[0])

    def reserve(self, headers: Iterable[tuple[bytes, bytes]]) -> list[int]:
        """The bytes a declared ``Content-Length`` holds in the budget, as a one-element list
        `counting` grows; the caller gives ``held[0]`` back when its request ends. `BadRequest`
        (400 for a length that is no number, 413 over the limit) or `Overloaded` (429), before a
        byte of the body is read: answer those with `refuse_body`."""
        declared = None
        for name, value in headers:
            if name == b"content-length":
                declared = value
        try:
            reserved = int(declared) if declared is not None else 0
        except ValueError:
            reserved = -1
        if reserved < 0:
            raise BadRequest("Content-Length is not a number")
        if reserved > self.max_bytes:
            raise self._error()
        self.budget.take(reserved)
        return [reserved]

    def counting(self, receive: Receive, held: list[int]) -> Receive:
        """``receive``, bounded: 413 past ``max_bytes``, 408 after a pause of ``body_timeout``, and
        the bytes beyond the reserved ones taken from the budget as they arrive."""
        seen = 0
        more = True

        async def counted() -> Message:
            nonlocal seen, more
            if not more:
                return await receive()  # the body is complete: only the disconnect is left
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout or None)
            except TimeoutError:
                raise BadRequest(f"the body paused for more than {self.body_timeout:g} s", status=408) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                more = bool(message.get("more_body", False))
                if seen > self.max_bytes:
                    raise self._error()
                if seen > held[0]:  # chunked, or more than declared: hold what arrived
                    self.budget.take(seen - held[0])
                    held[0] = seen
            return message

        return counted

    def _error(self) -> BadRequest:
        return BadRequest(f"the body is larger than the limit of {self.max_bytes} bytes", status=413)


async def refuse_body(exc: BadRequest | Overloaded, scope: Scope, receive: Receive, send: Send) -> None:
    """Refuse a request whose body is not read (`BodyLimit.reserve`): the connection closes, as
    the unread body would otherwise be taken for the next request."""
    headers = {"Connection": "close", **({"Retry-After": "1"} if exc.status == 429 else {})}
    response = JSONResponse({"error": error_body(exc)}, status_code=exc.status, headers=headers)
    await response(scope, receive, send)
