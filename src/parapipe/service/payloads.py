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

import base64
import dataclasses
import enum
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BadRequest, ResultNotSerializable, error_body

__all__ = [
    "JSON",
    "MULTIPART",
    "OCTETS",
    "UPLOAD_FIELD",
    "BodyLimit",
    "media_type",
    "read_item",
    "read_upload",
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
        return _json_item(await request.body())
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


def _json_item(body: bytes) -> Any:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f'the body is not valid JSON ({exc}); send {{"item": <any JSON>}}') from exc
    if not isinstance(doc, dict) or set(doc) != {"item"}:
        raise BadRequest('the JSON body must be an object with exactly one key, "item"', status=422)
    return doc["item"]


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
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return to_jsonable(value.tolist())
    raise ResultNotSerializable(
        f"the graph returned a {type(value).__name__}, which has no JSON form; "
        "return dicts, lists, numbers, strings or numpy arrays"
    )


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, declared or streamed.

    A declared ``Content-Length`` is refused before a byte is read; a chunked body is counted as
    it arrives and the read fails as soon as it passes the limit, so memory stays bounded.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        try:
            too_large = declared is not None and int(declared) > self.max_bytes
        except ValueError:
            await _refuse(BadRequest("Content-Length is not a number"), scope, receive, send)
            return
        if too_large:
            await _refuse(self._error(), scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._error()
            return message

        return counted

    def _error(self) -> BadRequest:
        return BadRequest(f"the body is larger than the limit of {self.max_bytes} bytes", status=413)


async def _refuse(exc: BadRequest, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"error": error_body(exc)}, status_code=exc.status, headers={"Connection": "close"})
    await response(scope, receive, send)
