"""Segment files in ``/dev/shm``: their names, their creation and reuse, and their removal.

A name says who may remove the file: ``parapipe-<owner pid>-<pid namespace>-<random>``, or
``...-spare-<maker pid>-<random>`` for a spare that holds no data yet. Nothing here reads a
segment back; that is `mapping`.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable

from ..errors import TransportError

SHM_DIR = "/dev/shm"
SEGMENT_PREFIX = "parapipe-"

_NAME = re.compile(r"parapipe-(\d+)-([0-9a-f]+)-[0-9a-f]{16}")
_ANY_NAME = re.compile(r"parapipe-(\d+)-([0-9a-f]+)-(?:[0-9a-f]{16}|spare-(\d+)-[0-9a-f]{8})")
"""A segment, or a spare (``spare-<maker pid>-...``) that is not a segment yet."""
_SPARE_MIN = 1 << 20
"""Smaller segments cost less to allocate than handing the work to another thread."""
_MAX_FREE_BYTES = 256 << 20
"""Recycled segments an arena keeps for reuse, in bytes; more are unlinked."""
_SPARE_HEADROOM = 4
"""Keep a spare only while /dev/shm has this many times its size free: data comes first."""


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
    (`recycle`); see the package docstring. With ``spare=True`` the arena also keeps one
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
        name = self._prefix + os.urandom(8).hex()  # not `secrets`: it loads OpenSSL in every worker
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
                os.ftruncate(fd, data.nbytes)  # a reused file may be larger: free the pages past the data
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

    def store_all(self, sources: list[memoryview]) -> list[str]:
        """Store every buffer, or none: a failure unlinks those already written."""
        names: list[str] = []
        try:
            for source in sources:
                names.append(self.store(source))
        except BaseException:
            release(names)
            raise
        return names

    def recycle(self, names: Iterable[str]) -> None:
        """Keep segments of this arena that no process maps any more, to overwrite; unlink
        those beyond `_MAX_FREE_BYTES`. The caller vouches that nobody maps them."""
        for name in names:
            path = segment_path(name)
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

    def wait_spare(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the spare being prepared; True if one is ready.

        `store` never needs this (it waits for a spare being made by itself). It is for a
        caller that must know what lies in /dev/shm, such as a test counting files. Always
        False for an arena made without ``spare=True``.
        """
        return self._spare is not None and self._spare.wait(timeout)

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

    def wait(self, timeout: float) -> bool:
        """Wait until no spare is asked for or being made; True if one is ready."""
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
            path = os.path.join(SHM_DIR, self._prefix + os.urandom(4).hex())
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


def release(names: Iterable[str]) -> int:
    """Unlink segments; open mappings stay valid. Returns how many existed (idempotent)."""
    return sum(_unlink(segment_path(name)) for name in names)


def sweep(owner_pid: int) -> int:
    """Unlink every segment (and spare) owned by ``owner_pid`` in this pid namespace; returns the count."""
    return sum(_unlink(os.path.join(SHM_DIR, name)) for name, pid, _ in _our_segments() if pid == owner_pid)


def sweep_spares(maker_pid: int) -> int:
    """Unlink the spare a process made and can no longer use (it died); returns the count."""
    return sum(_unlink(os.path.join(SHM_DIR, name)) for name, _, maker in _our_segments() if maker == maker_pid)


def sweep_dead() -> int:
    """Unlink the segments of owners that no longer run (left by a SIGKILLed engine)."""
    segments = _our_segments()
    dead = {pid for pid in {pid for _, pid, _ in segments} if not _alive(pid)}
    return sum(_unlink(os.path.join(SHM_DIR, name)) for name, pid, _ in segments if pid in dead)


def segment_path(name: str) -> str:
    """The file of a segment; refuses any other name, so no message can unlink other files."""
    if not _NAME.fullmatch(name):
        raise TransportError(f"{name!r} is not a parapipe segment name")
    return os.path.join(SHM_DIR, name)


def _write_all(fd: int, data: memoryview) -> None:
    """``write`` may stop short (a signal, the 2 GiB cap per call): loop until all is out."""
    while data:
        data = data[os.write(fd, data) :]


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
