"""Send large buffers between processes through POSIX shared memory instead of the pipe.

Pickling a 32 MiB array through a ``multiprocessing`` Pipe copies it four times and moves
every byte through the kernel in 64 KiB chunks (about 100 MB/s). Here pickle protocol 5
takes large buffers *out of band*: each is written once into its own file in ``/dev/shm``
(a *segment*), the message through the pipe carries only its name, and the receiver maps
the file so that numpy arrays come back as views on the mapping. A contiguous array
parent -> worker -> parent costs two copies: one ``write`` into a segment on each way out.

Messages::

    small object : the plain pickle (starts with 0x80), nothing else; the fast path
    large object : b"PPSM" | flags u8 | count u32 | count x (nbytes u64, len u8, name) | pickle

Lifecycle, owned by the parent, which sees every message:

* Segment names are ``parapipe-<owner pid>-<pid namespace>-<random>``. The owner is the
  *engine* (parent) pid, even for segments a worker creates, so one sweep catches them all.
* The parent calls ``release(segment_names(msg))`` once every process that needs ``msg``
  has decoded it (typically when the task that consumed it is finished). Release unlinks
  the files; mappings already open stay valid and the memory goes when the last view dies.
* A message may be decoded any number of times and forwarded untouched (stage A -> B
  without a trip through the parent's memory).
* ``sweep(pid)`` removes every segment of one owner: workers call it from their
  parent-death watchdog, the engine on close. ``sweep_dead()`` removes the segments of
  owners that no longer run: the engine calls it at start, after a SIGKILLed parent.

Design choices, each a bug avoided:

* Segments are filled with ``write()``, not ``ftruncate`` + ``mmap`` + copy: when
  ``/dev/shm`` is full (Docker's default is 64 MiB) writing through a mapping of a sparse
  file kills the process with SIGBUS, while ``write()`` fails with ENOSPC. Any error while
  storing makes `encode` fall back to an in-band message (and log it once). ``write()`` is
  also twice as fast as faulting in fresh pages through a mapping.
* Receivers map with ``mmap(2)`` through ctypes, not ``mmap.mmap``: before Python 3.13 each
  ``mmap.mmap`` object holds a duplicated file descriptor for its lifetime, so a thousand
  live result arrays would exhaust the descriptor limit.
* Receivers map ``MAP_PRIVATE`` (copy-on-write): a message may be decoded more than once
  (fan-out to several branches, a retry after a worker died), and a worker that edits its
  input in place must not change what the next reader sees. Reading costs nothing extra.
* The pid namespace is part of the name: containers of one Kubernetes pod share
  ``/dev/shm`` but not pids, and ``sweep_dead`` must not take another container's
  live segments for a dead process's leftovers.
* Segments are not reused: a receiver's arrays are views on the segment and live as long
  as user code keeps them, which no sender can see, so overwriting a segment could change
  data under a live array. (Reuse would save the page allocation, measured in
  ``benchmarks/transport_micro.py``; it would need receivers to report unmapped segments.)
"""

from __future__ import annotations

import ctypes
import functools
import io
import logging
import math
import mmap
import os
import pickle
import re
import secrets
import struct
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError, TransportError

__all__ = [
    "DEFAULT_THRESHOLD",
    "SEGMENT_PREFIX",
    "SHM_DIR",
    "SegmentArena",
    "TransportError",
    "decode",
    "encode",
    "release",
    "segment_names",
    "sweep",
    "sweep_dead",
]

SHM_DIR = "/dev/shm"
SEGMENT_PREFIX = "parapipe-"
DEFAULT_THRESHOLD = 1 << 20
"""Buffers from this many bytes go through shared memory; smaller ones stay in the pickle."""

_MAGIC = b"PPSM"
_HEAD = struct.Struct("<4sBI")
_ENTRY = struct.Struct("<QB")
_PICKLE_IN_SEGMENT = 1
_NAME = re.compile(r"parapipe-(\d+)-([0-9a-f]+)-[0-9a-f]{16}")

_log = logging.getLogger(__name__)

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


def _pid_namespace() -> int:
    """Identity of this pid namespace; pids mean nothing outside it."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


_PID_NAMESPACE = _pid_namespace()



class SegmentArena:
    """Creates the segment files of one process, named for the engine that owns them.

    Each stored buffer gets a fresh segment (see the module docstring for why none is
    reused). Safe to share between threads; the counters are statistics only.

    Args:
        owner_pid: the engine's pid. Workers pass their parent's pid so that the engine's
            sweeps find the segments they create. Defaults to this process.
    """

    def __init__(self, owner_pid: int | None = None) -> None:
        self.owner_pid = os.getpid() if owner_pid is None else owner_pid
        self._prefix = f"{SEGMENT_PREFIX}{self.owner_pid}-{_PID_NAMESPACE:x}-"
        self.segments_created = 0
        self.bytes_written = 0

    def store(self, data: memoryview) -> str:
        """Write ``data`` (one-dimensional, bytes) into a new segment and return its name."""
        name = self._prefix + secrets.token_hex(8)
        path = os.path.join(SHM_DIR, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
        except BaseException:
            _unlink(path)
            raise
        finally:
            os.close(fd)
        self.segments_created += 1
        self.bytes_written += data.nbytes
        return name

    def _store_all(self, sources: list[memoryview]) -> list[str]:
        """Store every buffer, or none: a failure unlinks those already written."""
        names: list[str] = []
        try:
            for source in sources:
                names.append(self.store(source))
        except BaseException:
            release(names)
            raise
        return names


def encode(obj: Any, *, arena: SegmentArena, threshold: int = DEFAULT_THRESHOLD) -> bytes:
    """Serialise ``obj`` for a pipe; buffers of ``threshold`` bytes or more go to segments.

    Small objects cost one ``pickle.dumps``, and their message is that plain pickle. The
    parent must `release` the `segment_names` of the message once it has been decoded.
    """
    if threshold < 1:
        raise ConfigError(f"threshold={threshold!r}: give a number of bytes >= 1")
    out_of_band = _OutOfBand(threshold)
    try:
        payload = pickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
    except TypeError:  # a memoryview, which plain pickle refuses
        payload, out_of_band = _pickle_with_memoryviews(obj, threshold)
    if len(payload) < threshold and not out_of_band.buffers:
        return payload
    try:
        return _frame(payload, out_of_band.buffers, arena, threshold)
    except OSError as exc:
        _warn_once(f"{type(exc).__name__}: {exc.strerror or exc}")
        return _pickle_with_memoryviews(obj, math.inf)[0]


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Rebuild the object of an `encode` message; arrays are views on the segments.

    The views are writable and private (copy-on-write): writing to one copies the pages
    written and never changes the segment, so the same message can be decoded again,
    elsewhere, with the original contents.
    """
    if data[:4] != _MAGIC:
        return pickle.loads(data)
    flags, segments, offset = _parse(data)
    buffers = [_map(name, nbytes) for name, nbytes in segments]
    body = buffers.pop(0) if flags & _PICKLE_IN_SEGMENT else memoryview(data)[offset:]
    return pickle.loads(body, buffers=buffers)


def segment_names(data: bytes | bytearray | memoryview) -> list[str]:
    """The segments a message references: what the parent must `release` once it is used."""
    if data[:4] != _MAGIC:
        return []
    return [name for name, _ in _parse(data)[1]]


def release(names: Iterable[str]) -> int:
    """Unlink segments; open mappings stay valid. Returns how many existed (idempotent)."""
    return sum(_unlink(_segment_path(name)) for name in names)


def sweep(owner_pid: int) -> int:
    """Unlink every segment owned by ``owner_pid`` in this pid namespace; returns the count."""
    return sum(
        _unlink(os.path.join(SHM_DIR, name)) for name, pid in _our_segments() if pid == owner_pid
    )


def sweep_dead() -> int:
    """Unlink the segments of owners that no longer run (left by a SIGKILLed engine)."""
    segments = _our_segments()
    dead = {pid for pid in {pid for _, pid in segments} if not _alive(pid)}
    return sum(_unlink(os.path.join(SHM_DIR, name)) for name, pid in segments if pid in dead)


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
) -> bytes:
    """Store the out-of-band buffers (and a pickle still too large for the pipe) in segments
    and return the message that names them."""
    sources = [buf.raw() for buf in big]
    flags = 0
    if len(payload) >= threshold:
        flags = _PICKLE_IN_SEGMENT
        sources.insert(0, memoryview(payload))
        payload = b""
    names = arena._store_all(sources)
    parts = [_HEAD.pack(_MAGIC, flags, len(names))]
    for name, source in zip(names, sources, strict=True):
        encoded = name.encode("ascii")
        parts += [_ENTRY.pack(source.nbytes, len(encoded)), encoded]
    parts.append(payload)
    return b"".join(parts)


def _parse(data: bytes | bytearray | memoryview) -> tuple[int, list[tuple[str, int]], int]:
    """Split a message header into flags, (segment name, nbytes) pairs and the pickle offset."""
    try:
        _, flags, count = _HEAD.unpack_from(data, 0)
        offset = _HEAD.size
        segments = []
        for _ in range(count):
            nbytes, length = _ENTRY.unpack_from(data, offset)
            offset += _ENTRY.size
            segments.append((bytes(data[offset : offset + length]).decode("ascii"), nbytes))
            offset += length
    except (struct.error, UnicodeDecodeError) as exc:
        raise TransportError("corrupt transport message: its header cannot be read") from exc
    return flags, segments, offset


class _Mapping:
    """One private mapping of a segment, exported to numpy through ``__array_interface__``.

    Every array or memoryview built on it keeps it alive; the last one to die unmaps it.
    """

    __slots__ = ("__array_interface__", "_address", "_length")
    _munmap = _libc.munmap  # held by the class: module globals may be gone at exit

    def __init__(self, address: int, length: int) -> None:
        self._address = address
        self._length = length
        self.__array_interface__ = {
            "data": (address, False),
            "shape": (length,),
            "typestr": "|u1",
            "version": 3,
        }

    def __del__(self) -> None:
        self._munmap(self._address, self._length)


def _map(name: str, nbytes: int) -> memoryview:
    """Map the first ``nbytes`` of a segment, writable and copy-on-write."""
    try:
        fd = os.open(_segment_path(name), os.O_RDONLY | os.O_CLOEXEC)
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
    mapping = _Mapping(address, nbytes)
    import numpy  # a dependency of parapipe; imported only once a segment arrives

    return memoryview(numpy.asarray(mapping))


def _reduce_memoryview(view: memoryview) -> tuple[Any, ...]:
    """memoryviews do not pickle at all: send their bytes, rebuild the same format and shape."""
    source = view if view.c_contiguous else memoryview(view.tobytes())
    try:
        source.cast("B").cast(view.format, view.shape)
    except (TypeError, ValueError) as exc:
        raise pickle.PicklingError(
            f"cannot send a memoryview of format {view.format!r} and shape {view.shape}: "
            "send bytes or a numpy array instead"
        ) from exc
    buffer = pickle.PickleBuffer(source)
    return (_rebuild_memoryview, (buffer, view.format, view.shape, view.readonly))


def _rebuild_memoryview(buffer: Any, fmt: str, shape: tuple[int, ...], readonly: bool) -> Any:
    view = memoryview(buffer)
    if (view.format, view.shape) != (fmt, shape):
        view = view.cast("B").cast(fmt, shape)
    return view.toreadonly() if readonly else view


def _write_all(fd: int, data: memoryview) -> None:
    """``write`` may stop short (a signal, the 2 GiB cap per call): loop until all is out."""
    while data:
        data = data[os.write(fd, data) :]


def _segment_path(name: str) -> str:
    """The file of a segment; refuses any other name, so no message can unlink other files."""
    if not _NAME.fullmatch(name):
        raise TransportError(f"{name!r} is not a parapipe segment name")
    return os.path.join(SHM_DIR, name)


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except (FileNotFoundError, PermissionError):  # gone already, or another user's file
        return False
    return True


def _our_segments() -> list[tuple[str, int]]:
    """(name, owner pid) of every segment in ``SHM_DIR`` from this pid namespace."""
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _NAME.fullmatch(name)
        if match and int(match[2], 16) == _PID_NAMESPACE:
            found.append((name, int(match[1])))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie counts as dead, it creates nothing more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, as another user
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    state = stat[stat.rfind(b")") + 2 :][:1]  # the command name may itself hold ")"
    return state != b"Z"


@functools.cache
def _warn_once(reason: str) -> None:
    _log.warning(
        "cannot store large buffers in %s (%s): sending them through the pipe, which is "
        "slower. In Docker, raise --shm-size (the default is 64 MiB).",
        SHM_DIR,
        reason,
    )
