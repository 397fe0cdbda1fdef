"""The message format: a plain pickle, or a header naming the segments that hold its buffers.

::

    small object : the plain pickle (starts with 0x80), nothing else; the fast path
    large object : b"PPSM" | flags u8 | count u32 | count x (nbytes u64, len u8, name) | pickle
"""

from __future__ import annotations

import functools
import io
import logging
import math
import pickle
import struct
from typing import Any

from ..errors import ConfigError, TransportError
from . import mapping, segments
from .segments import SegmentArena

PIPE_MESSAGE_LIMIT = 32 << 10
"""Largest message meant for a pipe between processes; what is larger goes to segments.

Above the socket buffers (~200 kB) two processes sending to each other at once would both
block in ``send``; below a few kB a segment costs more than the copy it saves.
"""
DEFAULT_THRESHOLD = PIPE_MESSAGE_LIMIT
"""Buffers from this many bytes go through shared memory; smaller ones stay in the pickle."""

_MAGIC = b"PPSM"
_HEAD = struct.Struct("<4sBI")
_ENTRY = struct.Struct("<QB")
_PICKLE_IN_SEGMENT = 1

_log = logging.getLogger(__name__)


def encode(obj: Any, *, arena: SegmentArena, threshold: int = DEFAULT_THRESHOLD) -> bytes:
    """Serialise ``obj`` for a pipe; buffers of ``threshold`` bytes or more go to segments.

    Small objects cost one ``pickle.dumps``, and their message is that plain pickle. The
    parent must `release` the `segment_names` of the message once it has been decoded.
    """
    return encode_with_names(obj, arena=arena, threshold=threshold)[0]


def encode_with_names(obj: Any, *, arena: SegmentArena, threshold: int = DEFAULT_THRESHOLD) -> tuple[bytes, list[str]]:
    """`encode`, and the names of the segments the message references, as `segment_names`
    would read them back: for a sender that keeps track of them without parsing again."""
    if threshold < 1:
        raise ConfigError(f"threshold={threshold!r}: give a number of bytes >= 1")
    out_of_band = _OutOfBand(threshold)
    try:
        payload = pickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
    except TypeError:  # a memoryview, which plain pickle refuses
        payload, out_of_band = _pickle_with_memoryviews(obj, threshold)
    if len(payload) < threshold and not out_of_band.buffers:
        return payload, []
    try:
        return _frame(payload, out_of_band.buffers, arena, threshold)
    except OSError as exc:
        _warn_once(f"{type(exc).__name__}: {exc.strerror or exc}")
        return _pickle_with_memoryviews(obj, math.inf)[0], []


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Rebuild the object of an `encode` message; arrays are views on the segments.

    The views are writable and private (copy-on-write): writing to one copies the pages
    written and never changes the segment, so the same message can be decoded again,
    elsewhere, with the original contents.
    """
    if data[:4] != _MAGIC:
        return pickle.loads(data)
    flags, entries, offset = _parse(data)
    buffers = [mapping.map_segment(name, nbytes) for name, nbytes in entries]
    body = buffers.pop(0) if flags & _PICKLE_IN_SEGMENT else memoryview(data)[offset:]
    return pickle.loads(body, buffers=buffers)


def segment_names(data: bytes | bytearray | memoryview) -> list[str]:
    """The segments a message references: what the parent must `release` once it is used."""
    if data[:4] != _MAGIC:
        return []
    return [name for name, _ in _parse(data)[1]]


class _OutOfBand:
    """The ``buffer_callback``: keeps buffers of ``threshold`` bytes or more out of band.

    A separate object, not a method of the pickler: a pickler holding its own bound method
    is a reference cycle, and the garbage collector clearing that cycle can free a buffer
    that a PickleBuffer still exports (a crash seen in testing).
    """

    __slots__ = ("buffers", "threshold")

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.buffers: list[pickle.PickleBuffer] = []

    def __call__(self, buf: pickle.PickleBuffer) -> bool:
        with memoryview(buf) as view:
            if view.nbytes < self.threshold:
                return True
        self.buffers.append(buf)
        return False


class _MemoryviewPickler(pickle.Pickler):
    """Pickles memoryviews too (plain pickle refuses them), out of band when large.

    Only used when ``pickle.dumps`` failed: a Pickler subclass costs ~3x ``pickle.dumps``
    on small objects.
    """

    def reducer_override(self, obj: Any) -> Any:
        return _reduce_memoryview(obj) if type(obj) is memoryview else NotImplemented


def _pickle_with_memoryviews(obj: Any, threshold: float) -> tuple[bytes, _OutOfBand]:
    file = io.BytesIO()
    out_of_band = _OutOfBand(threshold)
    _MemoryviewPickler(file, protocol=5, buffer_callback=out_of_band).dump(obj)
    return file.getvalue(), out_of_band


def _frame(
    payload: bytes, big: list[pickle.PickleBuffer], arena: SegmentArena, threshold: float
) -> tuple[bytes, list[str]]:
    """Store the out-of-band buffers (and a pickle still too large for the pipe) in segments;
    return the message that names them, and the names."""
    sources = [buf.raw() for buf in big]
    flags = 0
    if len(payload) >= threshold:
        flags = _PICKLE_IN_SEGMENT
        sources.insert(0, memoryview(payload))
        payload = b""
    names = arena.store_all(sources)
    parts = [_HEAD.pack(_MAGIC, flags, len(names))]
    for name, source in zip(names, sources, strict=True):
        encoded = name.encode("ascii")
        parts += [_ENTRY.pack(source.nbytes, len(encoded)), encoded]
    parts.append(payload)
    return b"".join(parts), names


def _parse(data: bytes | bytearray | memoryview) -> tuple[int, list[tuple[str, int]], int]:
    """Split a message header into flags, (segment name, nbytes) pairs and the pickle offset."""
    try:
        _, flags, count = _HEAD.unpack_from(data, 0)
        offset = _HEAD.size
        entries = []
        for _ in range(count):
            nbytes, length = _ENTRY.unpack_from(data, offset)
            offset += _ENTRY.size
            entries.append((bytes(data[offset : offset + length]).decode("ascii"), nbytes))
            offset += length
    except (struct.error, UnicodeDecodeError) as exc:
        raise TransportError("corrupt transport message: its header cannot be read") from exc
    return flags, entries, offset


def _reduce_memoryview(view: memoryview) -> tuple[Any, ...]:
    """memoryviews do not pickle at all: send their bytes, rebuild the same format and shape."""
    source = view if view.c_contiguous else memoryview(view.tobytes())
    shape = view.shape or ()
    try:
        _cast(source, view.format, shape)
    except (TypeError, ValueError) as exc:
        raise pickle.PicklingError(
            f"cannot send a memoryview of format {view.format!r} and shape {shape}: send bytes or a numpy array instead"
        ) from exc
    buffer = pickle.PickleBuffer(source)
    return (_rebuild_memoryview, (buffer, view.format, shape, view.readonly))


def _rebuild_memoryview(buffer: Any, fmt: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    view = memoryview(buffer)
    if (view.format, view.shape) != (fmt, shape):
        view = _cast(view, fmt, shape)
    return view.toreadonly() if readonly else view


def _cast(view: memoryview, fmt: str, shape: tuple[int, ...]) -> memoryview:
    """``view`` as items of ``fmt`` in ``shape``; through bytes, since memoryview casts
    only from or to a byte format."""
    raw: memoryview = view.cast("B")
    return raw.cast(fmt, shape)  # type: ignore[call-overload]  # typeshed: only literal formats


@functools.cache
def _warn_once(reason: str) -> None:
    _log.warning(
        "cannot store large buffers in %s (%s): sending them through the pipe, which is "
        "slower. In Docker, raise --shm-size (the default is 64 MiB).",
        segments.SHM_DIR,
        reason,
    )
