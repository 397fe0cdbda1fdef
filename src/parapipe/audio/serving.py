"""The speech graph behind ``parapipe serve``: `SpeechAdapter`, which `Decode.service_adapter` returns.

Request bodies: audio bytes only (a multipart upload or a raw body), given to `Decode` as
``{"data": bytes, "file": <base name>}``. JSON items are refused because `Decode` treats a
string as a *path*: the server never opens a file a client names, so a request cannot read
``/etc/passwd`` or another user's upload through the model.

Live speech over ``WS /v1/stream``: PCM16 in, one result per utterance out as each one ends
(the service's byte-stream convention, see `parapipe.service.session`). Protocol::

    client -> binary frames: 16 kHz mono signed 16-bit little-endian PCM, any chunk size
    client -> text {"type": "end"}: no more audio
    server -> {"type": "segment", "index", "start", "end", "text", "speaker", "gender", "turns", ...}
              as soon as an utterance is analysed (times in seconds from the stream's start)
    server -> {"type": "error", "index", "start", "end", "error": {...}} for an utterance that failed
    server -> {"type": "final", "duration", "text", "speakers", "turns", "segments", "utterances", "errors"}
              then the server closes the connection

How an utterance is found: every `STEP_SECONDS` of new audio, the speech stage's own VAD
(`parapipe.audio.Segment`, Silero) runs over the audio not yet sent on. A speech region
followed by at least `HOLD_SECONDS` of silence is finished: it goes through the whole graph
(decode, VAD, transcription, speaker, gender in their workers) while more audio arrives.
Speech that runs past `MAX_UTTERANCE_SECONDS` without a pause is cut there, Whisper's window.

The VAD runs in the server process, in a thread: it is a 2 MB model that needs about a
millisecond per second of audio, where a round trip through the workers per half second of
every stream would cost more than the work. It loads on the first audio stream.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..service.errors import BadRequest, error_body
from ..service.payloads import JSON, OCTETS, UPLOAD_FIELD, media_type, read_upload
from ..service.session import SessionHost, end_session, outcome
from .clip import SAMPLE_RATE, AudioClip
from .vad import Segment

__all__ = ["SAMPLE_RATE", "SpeechAdapter", "StreamSegmenter", "Utterance", "audio_session"]

STEP_SECONDS = 0.5
"""How much new audio triggers a VAD pass: the latency added before an utterance is noticed."""
HOLD_SECONDS = 0.3
"""Silence that ends an utterance; the `Segment` stage's own ``min_silence``."""
MAX_UTTERANCE_SECONDS = 30.0
KEEP_SILENCE_SECONDS = 0.5
"""Silence kept before the next speech when a pass finds none (speech may start right at the end)."""

Regions = tuple[tuple[float, float], ...]


class SpeechAdapter:
    """The `parapipe.service.adapters.ServiceAdapter` of speech graphs (see the module docstring)."""

    name = "speech"

    async def read_item(self, request: Request) -> dict[str, Any]:
        if media_type(request) == JSON:
            raise BadRequest(
                "this service runs a speech graph, which takes audio bytes: upload the file as "
                f"multipart field {UPLOAD_FIELD!r} or send it as {OCTETS}. JSON items are refused "
                "because the server never opens a file path given by a client",
                status=415,
            )
        data, name = await read_upload(request)
        return {"data": data, "file": name}

    async def ws_session(self, host: SessionHost, websocket: WebSocket) -> None:
        await audio_session(host, websocket)


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech: its place in the stream (seconds) and its PCM16 bytes."""

    index: int
    start: float
    end: float
    pcm: bytes


class StreamSegmenter:
    """Cuts a growing PCM16 stream into utterances at pauses (see the module docstring).

    Args:
        find_speech: speech regions ``((start, end), ...)`` in seconds of a float32 16 kHz array.
    """

    def __init__(self, find_speech: Callable[[np.ndarray], Regions]) -> None:
        self._find = find_speech
        self._pending = bytearray()
        self._odd = b""
        self._offset = 0  # samples of the stream before _pending
        self._unchecked = 0  # samples added since the last VAD pass
        self._count = 0

    @property
    def seconds(self) -> float:
        """Audio received so far."""
        return (self._offset + len(self._pending) // 2) / SAMPLE_RATE

    def feed(self, data: bytes) -> list[Utterance]:
        """Add audio; return the utterances it finished (usually none)."""
        data = self._odd + data
        whole = len(data) - len(data) % 2  # a frame may split a sample between two messages
        self._odd = data[whole:]
        self._pending += data[:whole]
        self._unchecked += whole // 2
        if self._unchecked < STEP_SECONDS * SAMPLE_RATE:
            return []
        self._unchecked = 0
        return self._cut(final=False)

    def flush(self) -> list[Utterance]:
        """The end of the stream: every remaining speech region is an utterance."""
        return self._cut(final=True)

    def _cut(self, *, final: bool) -> list[Utterance]:
        """Emit the finished speech regions and forget the audio up to the end of the last one."""
        audio = np.frombuffer(bytes(self._pending), dtype="<i2").astype(np.float32) / 32768.0
        length = len(audio) / SAMPLE_RATE
        regions = self._find(audio) if len(audio) else ()
        if final or (regions and length >= MAX_UTTERANCE_SECONDS):
            done, until = regions, length
        elif not regions:
            done, until = (), max(0.0, length - KEEP_SILENCE_SECONDS)
        else:
            done = tuple(r for r in regions if length - r[1] >= HOLD_SECONDS)
            until = done[-1][1] if done else 0.0
        utterances = [self._utterance(start, end) for start, end in done]
        self._drop(until)
        return utterances

    def _utterance(self, start: float, end: float) -> Utterance:
        first, last = int(start * SAMPLE_RATE), int(end * SAMPLE_RATE)
        base = self._offset / SAMPLE_RATE
        self._count += 1
        return Utterance(
            self._count - 1, round(base + start, 3), round(base + end, 3), bytes(self._pending[2 * first : 2 * last])
        )

    def _drop(self, seconds: float) -> None:
        samples = int(seconds * SAMPLE_RATE)
        del self._pending[: 2 * samples]
        self._offset += samples


@functools.cache
def speech_finder() -> Callable[[np.ndarray], Regions]:
    """The `Segment` stage's VAD, loaded once per server process (seconds; call it in a thread)."""
    segment = Segment(min_silence=HOLD_SECONDS)
    segment.setup()

    def find(audio: np.ndarray) -> Regions:
        clip = AudioClip(file="<stream>", audio=audio, sample_rate=SAMPLE_RATE, duration=len(audio) / SAMPLE_RATE)
        return segment.process(clip).segments or ()

    return find


async def audio_session(host: SessionHost, websocket: WebSocket) -> None:
    """Run one audio stream until the client says ``end`` (or goes away)."""
    segmenter = StreamSegmenter(await asyncio.to_thread(speech_finder))
    results: asyncio.Queue[tuple[Utterance, asyncio.Task[dict[str, Any]]] | None] = asyncio.Queue()
    sender = asyncio.create_task(_send_results(websocket, results, segmenter))
    try:
        while not sender.done():
            finished, ended = await _next_utterances(websocket, segmenter)
            for u in finished:
                item = {"pcm16": u.pcm, "sample_rate": SAMPLE_RATE, "file": f"<stream#{u.index}>"}
                await results.put((u, asyncio.create_task(outcome(host.run(item)))))
            if ended:
                await results.put(None)
                await sender
                return
    except WebSocketDisconnect:
        pass
    finally:
        await end_session(sender, results, lambda entry: entry[1] if entry is not None else None)


async def _next_utterances(websocket: WebSocket, segmenter: StreamSegmenter) -> tuple[list[Utterance], bool]:
    """Read one message: (utterances it finished, whether the stream ended)."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("bytes") is not None:
        return await asyncio.to_thread(segmenter.feed, message["bytes"]), False
    try:
        command = json.loads(message.get("text") or "")
    except ValueError:
        command = None
    if not isinstance(command, dict) or command.get("type") != "end":
        error = BadRequest('send audio as binary PCM16 frames and {"type": "end"} as the last message')
        await websocket.send_json({"type": "error", "error": error_body(error)})
        return [], False
    return await asyncio.to_thread(segmenter.flush), True


async def _send_results(
    websocket: WebSocket,
    results: asyncio.Queue[tuple[Utterance, asyncio.Task[dict[str, Any]]] | None],
    segmenter: StreamSegmenter,
) -> None:
    messages: list[dict[str, Any]] = []
    while (entry := await results.get()) is not None:
        utterance, task = entry
        messages.append(segment_message(utterance, await task))
        await websocket.send_text(json.dumps(messages[-1], allow_nan=False))
    await websocket.send_text(json.dumps(final_message(messages, segmenter.seconds), allow_nan=False))
    await websocket.close()


def segment_message(u: Utterance, reply: dict[str, Any]) -> dict[str, Any]:
    """What the client gets for one utterance: its text, speaker and gender, times in stream time."""
    base = {"type": "segment", "index": u.index, "start": u.start, "end": u.end}
    if "error" in reply:
        return {**base, "type": "error", "error": reply["error"]}
    result = reply["result"]
    if not isinstance(result, dict):
        return {**base, "result": result}
    timed = {
        key: [{**s, "start": round(u.start + s["start"], 2), "end": round(u.start + s["end"], 2)}
              for s in result.get(key) or []]
        for key in ("turns", "segments")
    }
    fields = ("text", "speaker", "speakers", "gender", "gender_confidence", "age", "language")
    return {**base, **{k: result.get(k) for k in fields}, **timed}


def final_message(messages: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    """The whole stream at once: joined text, everyone who spoke, every timed segment."""
    ok = [m for m in messages if m["type"] == "segment"]
    speakers = {s for m in ok for s in (m.get("speakers") or [m.get("speaker")]) if s is not None}
    return {
        "type": "final",
        "duration": round(duration, 3),
        "text": " ".join(m["text"] for m in ok if m.get("text")),
        "speakers": sorted(speakers),
        "turns": [t for m in ok for t in m.get("turns", [])],
        "segments": [s for m in ok for s in m.get("segments", [])],
        "utterances": len(messages),
        "errors": len(messages) - len(ok),
    }
