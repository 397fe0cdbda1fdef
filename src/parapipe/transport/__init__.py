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
* The parent's own segments go to one worker at a time, and a `SegmentLedger` per worker
  tracks them: *sent* with a message, *lent* once it is answered (the worker's arrays may
  still be views on them), recycled when the worker reports them unmapped, and unlinked if
  the worker dies.
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

One concept per module:

* `wire`: the message format, `encode`/`decode`/`segment_names`, out-of-band pickling.
* `segments`: the files in ``/dev/shm``: naming, `SegmentArena` (reuse and spares),
  `release` and the sweeps.
* `mapping`: private mappings of segments, and the record of those that died.
* `packed`: `Packed`, a value forwarded in its encoded form.
* `ledger`: `SegmentLedger`, the parent's segments lent to one worker.
"""

from __future__ import annotations

from ..errors import TransportError
from .ledger import SegmentLedger
from .mapping import drain_unmapped, track_unmapped
from .packed import Packed, pack, unpacked
from .segments import SEGMENT_PREFIX, SHM_DIR, SegmentArena, release, sweep, sweep_dead, sweep_spares
from .wire import DEFAULT_THRESHOLD, PIPE_MESSAGE_LIMIT, decode, encode, encode_with_names, segment_names

__all__ = [
    "DEFAULT_THRESHOLD",
    "PIPE_MESSAGE_LIMIT",
    "SEGMENT_PREFIX",
    "SHM_DIR",
    "Packed",
    "SegmentArena",
    "SegmentLedger",
    "TransportError",
    "decode",
    "drain_unmapped",
    "encode",
    "encode_with_names",
    "pack",
    "release",
    "segment_names",
    "sweep",
    "sweep_dead",
    "sweep_spares",
    "track_unmapped",
    "unpacked",
]
