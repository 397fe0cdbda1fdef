"""Send large buffers between processes through POSIX shared memory instead of the pipe.

Pickling a 32 MiB array through a ``multiprocessing`` Pipe copies it four times and moves
every byte through the kernel in 64 KiB chunks (about 100 MB/s). Here pickle protocol 5
takes large buffers *out of band*: each is written once into its own file in ``/dev/shm``
(a *segment*), the message through the pipe carries only its name, and the receiver maps
the file so that numpy arrays come back as views on the mapping. A contiguous array
parent -> worker -> parent costs two copies: one ``write`` into a segment on each way out,
and none of its bytes crosses the pipe.

Messages::

    small object : the plain pickle (starts with 0x80), nothing else; the fast path
    large object : b"PPSM" | flags u8 | count u32 | count x (nbytes u64, len u8, name) | pickle

Lifecycle, owned by the parent, which sees every message:

* Segment names are ``parapipe-<owner pid>-<pid namespace>-<random>``. The owner is the
  *engine* (parent) pid, even for segments a worker creates, so one sweep catches them all.
* The parent calls ``release(segment_names(msg))`` once every process that needs ``msg``
  has decoded it (typically when the task that consumed it is finished). Release unlinks
  the files; mappings already open stay valid and the memory goes when the last view dies.
* A message may be decoded any number of times and forwarded untouched. A worker wraps a
  large result in a `Packed` (its message, still encoded); the parent hands the `Packed` to
  the next stage as it is, so an array goes from stage A's segment straight into stage B's
  mapping and its bytes never enter the parent. The parent decodes a `Packed` only where
  it needs the value itself: a merge, or the job's final result.
* A `Packed` the parent received *owns* its segments (`Packed.adopt`): they are released when
  the last reference to it goes, i.e. when no task that may still send it (a retry, a
  sibling branch) holds it.
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
* A fresh segment costs more in the kernel handing out new pages than in the copy
  (``benchmarks/transport_micro.py``), so pages are reused, but only when it is safe: a
  receiver's arrays are views on the segment and live as long as user code keeps them,
  and MAP_PRIVATE pages not yet written still show later writes to the file. So a
  segment is overwritten only after its one reader said it unmapped it: workers note
  every mapping that dies (`track_unmapped`) and report the names with their next
  results; the parent hands those it created to `SegmentArena.recycle`. A recycled
  segment is renamed when reused, so a stale message naming it finds nothing rather
  than new data. Segments a worker creates have several possible readers (the parent,
  the next stages), so they are not recycled; instead the worker's arena keeps a *spare*:
  after each large store a background thread allocates an empty segment of the same size
  (``posix_fallocate`` releases the GIL) while the process computes or waits, and the next
  store only copies into it. A spare is named for the process that made it, so the engine
  can remove a dead worker's spare; `sweep` removes spares too.
"""

from __future__ import annotations

import collections
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
import threading
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError, TransportError

__all__ = [
    "DEFAULT_THRESHOLD",
    "SEGMENT_PREFIX",
    "SHM_DIR",
    "Packed",
    "SegmentArena",
    "TransportError",
    "decode",
    "encode",
    "pack",
    "release",
    "segment_names",
    "sweep",
    "sweep_dead",
    "sweep_spares",
    "unpacked",
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
_ANY_NAME = re.compile(r"parapipe-(\d+)-([0-9a-f]+)-(?:[0-9a-f]{16}|spare-(\d+)-[0-9a-f]{8})")
"""A segment, or a spare (``spare-<maker pid>-...``) that is not a segment yet."""
_SPARE_MIN = 1 << 20
"""Smaller segments cost less to allocate than handing the work to another thread."""
_MAX_FREE_BYTES = 256 << 20
"""Recycled segments an arena keeps for reuse, in bytes; more are unlinked."""
_SPARE_HEADROOM = 4
"""Keep a spare only while /dev/shm has this many times its size free: data comes first."""

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

    A segment is overwritten only once every process that mapped it said it unmapped it
    (`recycle`); see the module docstring. With ``spare=True`` the arena also keeps one
    empty segment ready for the next store of the last size. `close` removes what it kept.
    Safe to share between threads; the counters are statistics only.

    Args:
        owner_pid: the engine's pid. Workers pass their parent's pid so that the engine's
            sweeps find the segments they create. Defaults to this process.
        spare: prepare the next segment in a background thread.
    """

    def __init__(self, owner_pid: int | None = None, *, spare: bool = False) -> None:
        self.owner_pid = os.getpid() if owner_pid is None else owner_pid
        self._prefix = f"{SEGMENT_PREFIX}{self.owner_pid}-{_PID_NAMESPACE:x}-"
        self.segments_created = 0
        self.bytes_written = 0
        self.segments_reused = 0
        """Stores that overwrote a recycled segment or filled a spare: no fresh pages."""
        self._spare = _Spares(self._prefix) if spare else None
        self._free: list[tuple[int, str]] = []
        self._free_lock = threading.Lock()

    def store(self, data: memoryview) -> str:
        """Write ``data`` (one-dimensional, bytes) into a new segment and return its name."""
        name = self._prefix + secrets.token_hex(8)
        path = os.path.join(SHM_DIR, name)
        reused = self._take_free(data.nbytes) or (self._spare.take() if self._spare is not None else None)
        # A new name for old pages: a stale message naming the old one finds nothing.
        if reused is not None and _rename(reused, path):
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            self.segments_reused += 1
        else:
            reused = None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
            if reused is not None:
                os.ftruncate(fd, data.nbytes)  # it was larger
        except BaseException:
            _unlink(path)
            raise
        finally:
            os.close(fd)
        if self._spare is not None and data.nbytes >= _SPARE_MIN and not self._free:
            self._spare.request(data.nbytes)
        self.segments_created += 1
        self.bytes_written += data.nbytes
        return name

    def recycle(self, names: Iterable[str]) -> None:
        """Keep segments of this arena that no process maps any more, to overwrite; unlink
        those beyond `_MAX_FREE_BYTES`. The caller vouches that nobody maps them."""
        for name in names:
            path = _segment_path(name)
            if not name.startswith(self._prefix):
                continue
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            with self._free_lock:
                if size + sum(n for n, _ in self._free) <= _MAX_FREE_BYTES:
                    self._free.append((size, path))
                    continue
            _unlink(path)

    def _take_free(self, nbytes: int) -> str | None:
        """The smallest kept segment that holds ``nbytes`` (else the largest: fewer new pages)."""
        with self._free_lock:
            if not self._free:
                return None
            fits = [entry for entry in self._free if entry[0] >= nbytes]
            entry = min(fits) if fits else max(self._free)
            self._free.remove(entry)
            return entry[1]

    def close(self) -> None:
        """Stop preparing spares and remove the segments kept for reuse."""
        if self._spare is not None:
            self._spare.close()
        with self._free_lock:
            kept, self._free = self._free, []
        for _, path in kept:
            _unlink(path)

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


class _Spares:
    """One empty segment, prepared by a daemon thread for the next `SegmentArena.store`."""

    def __init__(self, prefix: str) -> None:
        self._prefix = f"{prefix}spare-{os.getpid()}-"
        self._cond = threading.Condition()
        self._ready: str | None = None
        self._wanted = 0
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def take(self) -> str | None:
        """The ready spare, waiting for one being made: finishing it costs less than a fresh
        segment, and a fresh one would compete with it for the CPU."""
        with self._cond:
            self._cond.wait_for(lambda: not self._busy)
            path, self._ready = self._ready, None
            return path

    def request(self, nbytes: int) -> None:
        with self._cond:
            if self._closed or self._ready is not None:
                return
            self._wanted = nbytes
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="parapipe-shm-spare", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def settle(self, timeout: float) -> bool:
        """Wait until no spare is being made; True if one is ready."""
        with self._cond:
            self._cond.wait_for(lambda: not (self._wanted or self._busy), timeout)
            return self._ready is not None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            path, self._ready = self._ready, None
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join()
        if path is not None:
            _unlink(path)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not (self._wanted and self._ready is None):
                    self._cond.wait()
                if self._closed:
                    return
                nbytes, self._wanted, self._busy = self._wanted, 0, True
            path = self._make(nbytes)
            with self._cond:
                self._busy = False
                if self._closed or self._ready is not None:
                    if path is not None:
                        _unlink(path)
                else:
                    self._ready = path
                    self._wanted = 0  # a request made meanwhile is served by this one
                self._cond.notify_all()

    def _make(self, nbytes: int) -> str | None:
        """A file of ``nbytes`` with its pages allocated, or None if /dev/shm is short."""
        try:
            st = os.statvfs(SHM_DIR)
            if st.f_bavail * st.f_frsize < _SPARE_HEADROOM * nbytes:
                return None
            path = os.path.join(SHM_DIR, self._prefix + secrets.token_hex(4))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError:
            _unlink(path)
            return None
        finally:
            os.close(fd)
        return path


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


def track_unmapped() -> None:
    """From now on note every segment this process unmaps (a worker calls it at start)."""
    _Mapping.unmapped = collections.deque()


def drain_unmapped() -> list[str]:
    """Segments this process has stopped mapping since the last call: their senders may
    `SegmentArena.recycle` them. Empty unless `track_unmapped` was called."""
    queue = _Mapping.unmapped
    if not queue:
        return []
    out = []
    while queue:
        out.append(queue.popleft())
    return out


def release(names: Iterable[str]) -> int:
    """Unlink segments; open mappings stay valid. Returns how many existed (idempotent)."""
    return sum(_unlink(_segment_path(name)) for name in names)


def sweep(owner_pid: int) -> int:
    """Unlink every segment (and spare) owned by ``owner_pid`` in this pid namespace; returns the count."""
    return sum(
        _unlink(os.path.join(SHM_DIR, name)) for name, pid, _ in _our_segments() if pid == owner_pid
    )


def sweep_spares(maker_pid: int) -> int:
    """Unlink the spare a process made and can no longer use (it died); returns the count."""
    return sum(_unlink(os.path.join(SHM_DIR, name)) for name, _, maker in _our_segments() if maker == maker_pid)


def sweep_dead() -> int:
    """Unlink the segments of owners that no longer run (left by a SIGKILLed engine)."""
    segments = _our_segments()
    dead = {pid for pid in {pid for _, pid, _ in segments} if not _alive(pid)}
    return sum(_unlink(os.path.join(SHM_DIR, name)) for name, pid, _ in segments if pid in dead)


_SMALL_TYPES = frozenset({int, float, bool, type(None), complex})


def pack(obj: Any, *, arena: SegmentArena, threshold: int = DEFAULT_THRESHOLD) -> Any:
    """``obj`` as a `Packed` when it needs shared memory, else ``obj`` itself.

    A value that pickles small stays as it is (the enclosing message carries it); a large one
    is encoded once, here, so that whoever receives it can pass it on without decoding it.
    """
    if type(obj) in _SMALL_TYPES:
        return obj
    data = encode(obj, arena=arena, threshold=threshold)
    return Packed(data) if data[:4] == _MAGIC else obj


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
    """The value itself, whether or not it arrived as a `Packed`."""
    return value.unpack() if type(value) is Packed else value


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

    Every array or memoryview built on it keeps it alive; the last one to die unmaps it
    and, in a process that `track_unmapped`, notes the segment's name.
    """

    __slots__ = ("__array_interface__", "_address", "_length", "_name")
    _munmap = _libc.munmap  # held by the class: module globals may be gone at exit
    unmapped: collections.deque[str] | None = None

    def __init__(self, address: int, length: int, name: str) -> None:
        self._address = address
        self._length = length
        self._name = name
        self.__array_interface__ = {
            "data": (address, False),
            "shape": (length,),
            "typestr": "|u1",
            "version": 3,
        }

    def __del__(self) -> None:
        self._munmap(self._address, self._length)
        if _Mapping.unmapped is not None:
            _Mapping.unmapped.append(self._name)


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
    mapping = _Mapping(address, nbytes, name)
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


def _rename(source: str, target: str) -> bool:
    try:
        os.rename(source, target)
    except FileNotFoundError:  # swept meanwhile
        return False
    return True


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except (FileNotFoundError, PermissionError):  # gone already, or another user's file
        return False
    return True


def _our_segments() -> list[tuple[str, int, int | None]]:
    """(name, owner pid, maker pid of a spare or None) of every segment and spare in
    ``SHM_DIR`` from this pid namespace."""
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _ANY_NAME.fullmatch(name)
        if match and int(match[2], 16) == _PID_NAMESPACE:
            found.append((name, int(match[1]), int(match[3]) if match[3] else None))
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
