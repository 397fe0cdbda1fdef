"""Private (copy-on-write) mappings of segments, and the record of those that died.

A receiver's arrays are views on a mapping, so only the receiver knows when a segment is
no longer read. A worker turns that record on at start (`track_unmapped`) and sends what
`drain_unmapped` returns with its next results, so that the parent may overwrite those
segments.
"""

from __future__ import annotations

import collections
import ctypes
import mmap
import os

from ..errors import TransportError
from .segments import segment_path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value

_unmapped: collections.deque[str] | None = None
"""Names of the segments whose mappings died, while this process records them."""


def track_unmapped() -> None:
    """From now on note every segment this process unmaps (a worker calls it at start).

    Only mappings made from now on are noted: each holds the record it was made with, since
    module globals may be gone when the last mapping dies at exit.
    """
    global _unmapped
    if _unmapped is None:
        _unmapped = collections.deque()


def drain_unmapped() -> list[str]:
    """Segments this process has stopped mapping since the last call: their senders may
    `SegmentArena.recycle` them. Empty unless `track_unmapped` was called."""
    names: list[str] = []
    if _unmapped is None:
        return names
    while _unmapped:  # popleft, not a copy and clear: a mapping may die in another thread meanwhile
        names.append(_unmapped.popleft())
    return names


class _Mapping:
    """One private mapping of a segment, exported to numpy through ``__array_interface__``.

    Every array or memoryview built on it keeps it alive; the last one to die unmaps it
    and notes the segment's name in ``record``, if it was given one.
    """

    __slots__ = ("__array_interface__", "_address", "_length", "_name", "_record")
    _munmap = _libc.munmap  # held by the class: module globals may be gone at exit

    def __init__(self, address: int, length: int, name: str, record: collections.deque[str] | None) -> None:
        self._address = address
        self._length = length
        self._name = name
        self._record = record
        self.__array_interface__ = {
            "data": (address, False),
            "shape": (length,),
            "typestr": "|u1",
            "version": 3,
        }

    def __del__(self) -> None:
        self._munmap(self._address, self._length)
        if self._record is not None:
            self._record.append(self._name)


def map_segment(name: str, nbytes: int) -> memoryview:
    """Map the first ``nbytes`` of a segment, writable and copy-on-write."""
    try:
        fd = os.open(segment_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise TransportError(
            f"shared-memory segment {name} is gone: it was released or swept before this "
            "message was decoded (a cancelled task, or an engine restart?)"
        ) from exc
    try:
        if os.fstat(fd).st_size < nbytes:  # mapping past the end would SIGBUS on access
            raise TransportError(f"shared-memory segment {name} is shorter than {nbytes} bytes")
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        address = _libc.mmap(None, nbytes, prot, mmap.MAP_PRIVATE, fd, 0)
    finally:
        os.close(fd)
    if address in (None, _MAP_FAILED):
        errno = ctypes.get_errno()
        raise OSError(errno, f"mmap of {name}: {os.strerror(errno)}")
    mapping = _Mapping(address, nbytes, name, _unmapped)
    import numpy  # a dependency of parapipe; imported only once a segment arrives

    return numpy.asarray(mapping).data
