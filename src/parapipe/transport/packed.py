"""`Packed`: a value kept in its encoded form, so that it can be forwarded without decoding.

A worker wraps a large result in a `Packed`; the parent hands it to the next stage as it
is, so its arrays go from one worker's segment into the next worker's mapping and their
bytes never enter the parent.
"""

from __future__ import annotations

from typing import Any

from .segments import SegmentArena, release
from .wire import DEFAULT_THRESHOLD, decode, encode_with_names, segment_names

_SMALL_TYPES = frozenset({int, float, bool, type(None), complex})
_FLAT_TYPES = frozenset({bytes, bytearray, str})


def pack(obj: Any, *, arena: SegmentArena, threshold: int = DEFAULT_THRESHOLD) -> Any:
    """``obj`` as a `Packed` when it needs shared memory, else ``obj`` itself.

    A value that pickles small stays as it is (the enclosing message carries it); a large one
    is encoded once, here, so that whoever receives it can pass it on without decoding it.
    """
    kind = type(obj)
    if kind in _SMALL_TYPES:
        return obj
    if kind in _FLAT_TYPES and len(obj) * 4 < threshold:  # UTF-8 is at most 4 bytes a character
        return obj  # small for sure: no trial pickle (the enclosing message pickles it anyway)
    data, names = encode_with_names(obj, arena=arena, threshold=threshold)
    return Packed(data) if names else obj


class Packed:
    """A value still in its `encode` form, whose large buffers sit in segments.

    Pickling a `Packed` sends only its small message (segment names and the in-band pickle),
    which is how a large result moves from one stage's worker to the next one's without the
    parent reading or writing its bytes. `unpack` rebuilds the value (views on the segments).
    """

    __slots__ = ("_names", "data")
    _release = staticmethod(release)  # held by the class: module globals may be gone at exit

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._names: list[str] = []

    def unpack(self) -> Any:
        return decode(self.data)

    def adopt(self) -> Packed:
        """Make this object the owner of its segments: they are released when it dies."""
        self._names = segment_names(self.data)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Packed, (self.data,))

    def __del__(self) -> None:
        if self._names:
            self._release(self._names)


def unpacked(value: Any) -> Any:
    """The value itself, whether or not it arrived as a `Packed` (or a backend's subclass)."""
    return value.unpack() if isinstance(value, Packed) else value
