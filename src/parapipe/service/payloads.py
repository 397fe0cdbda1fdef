"""What crosses the HTTP boundary: request bodies into items, results into JSON.

A request body becomes one item::

    application/json          {"item": <any JSON>}    ->  the JSON value
    multipart/form-data       field "file"            ->  the file's bytes
    application/octet-stream  the raw body            ->  the bytes

Audio graphs (those whose first stage is the speech `Decode`) take bytes only, given to
`Decode` as ``{"data": bytes, "file": <base name>}``. Their JSON items are refused because
`Decode` treats a string as a *path*: the server never opens a file a client names, so a
request cannot read ``/etc/passwd`` or another user's upload through the model.

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
import sys
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BadRequest, ResultNotSerializable, error_body

__all__ = ["BodyLimit", "is_audio_graph", "read_item", "to_jsonable"]

_JSON = "application/json"
_MULTIPART = "multipart/form-data"
_OCTETS = "application/octet-stream"
_UPLOAD_FIELD = "file"


def is_audio_graph(graph: Any) -> bool:
    """True when the graph's first stage is the speech `Decode`.

    Looked up in ``sys.modules`` rather than imported: a graph can only hold a `Decode` if the
    audio package is loaded already, and the service must not import the speech stack otherwise.
    """
    decode = sys.modules.get("parapipe.audio.decode")
    if decode is None:
        return False
    first = graph
    while hasattr(first, "steps"):  # a Pipeline: its first step runs first
        first = first.steps[0]
    return isinstance(first, decode.Decode)


async def read_item(request: Request, *, audio: bool) -> Any:
    """The item a POST body carries (see the module docstring); `BadRequest` when malformed."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == _JSON:
        if audio:
            raise BadRequest(
                "this service runs a speech graph, which takes audio bytes: upload the file as "
                f"multipart field {_UPLOAD_FIELD!r} or send it as {_OCTETS}. JSON items are refused "
                "because the server never opens a file path given by a client",
                status=415,
            )
        return _json_item(await request.body())
    if media == _MULTIPART:
        data, name = await _upload(request)
    elif media == _OCTETS:
        data, name = await request.body(), "<upload>"
    else:
        raise BadRequest(
            f'unsupported Content-Type {media or "(none)"!r}: send {_JSON} with {{"item": ...}}, '
            f"{_MULTIPART} with a {_UPLOAD_FIELD!r} field, or {_OCTETS}",
            status=415,
        )
    return {"data": data, "file": name} if audio else data


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
    upload = form.get(_UPLOAD_FIELD)
    if not isinstance(upload, UploadFile):
        await form.close()
        raise BadRequest(f"the multipart body needs a file field named {_UPLOAD_FIELD!r}", status=422)
    try:
        data = await upload.read()
    finally:
        await form.close()
    return data, os.path.basename(upload.filename or "") or "<upload>"


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
