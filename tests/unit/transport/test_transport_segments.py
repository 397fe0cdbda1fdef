"""Shared-memory transport, the files: reuse, spares, release and the sweeps after a crash.

Every test checks that no segment of this process is left in /dev/shm. The cross-process
tests spawn real children (the engine's start method), kill them and join them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest

from parapipe import transport
from parapipe.transport import (
    SegmentArena,
    TransportError,
    decode,
    encode,
    mapping,
    release,
    segment_names,
    segments,
    sweep,
    sweep_dead,
)

from ._shm import MIB, big_array, checksum, ours

# --- reuse and spares -------------------------------------------------------------------


def test_a_spare_segment_takes_the_next_store() -> None:
    arena = SegmentArena(spare=True)
    first = encode(big_array(4, seed=1), arena=arena)
    assert arena.wait_spare(60)
    assert len(ours()) == 2  # the segment and the spare made for the next store
    smaller = big_array(3, seed=2)
    second = encode(smaller, arena=arena)
    assert arena.segments_reused == 1
    [name] = segment_names(second)
    assert os.stat(os.path.join(transport.SHM_DIR, name)).st_size == smaller.nbytes
    assert checksum(decode(second)) == checksum(smaller)
    release(segment_names(first) + segment_names(second))
    assert arena.wait_spare(60)
    arena.close()  # removes the spare made after the second store
    assert ours() == []


def test_unmapped_segments_are_reported_and_recycled(monkeypatch: pytest.MonkeyPatch, arena: SegmentArena) -> None:
    monkeypatch.setattr(mapping, "_unmapped", None)  # this process records until the test ends
    transport.track_unmapped()
    first = encode(big_array(4, seed=1), arena=arena)
    [old] = segment_names(first)
    a = decode(first)
    assert transport.drain_unmapped() == []  # still mapped
    del a
    assert transport.drain_unmapped() == [old]
    arena.recycle([old])
    smaller = big_array(2, seed=2)
    second = encode(smaller, arena=arena)
    assert arena.segments_reused == 1
    assert old not in os.listdir(transport.SHM_DIR)  # renamed: a stale message finds nothing
    with pytest.raises(TransportError):
        decode(first)
    assert checksum(decode(second)) == checksum(smaller)
    release(segment_names(second))


def test_mappings_made_before_tracking_are_not_reported(monkeypatch: pytest.MonkeyPatch, arena: SegmentArena) -> None:
    monkeypatch.setattr(mapping, "_unmapped", None)
    msg = encode(big_array(2), arena=arena)
    a = decode(msg)
    transport.track_unmapped()
    del a
    assert transport.drain_unmapped() == []
    release(segment_names(msg))


def test_recycling_keeps_a_bounded_amount(monkeypatch: pytest.MonkeyPatch, arena: SegmentArena) -> None:
    monkeypatch.setattr(segments, "_MAX_FREE_BYTES", 5 * MIB)
    names = [n for i in range(3) for n in segment_names(encode(big_array(2, seed=i), arena=arena))]
    arena.recycle(names)
    assert len(ours()) == 2  # two 2 MiB segments fit in 5 MiB; the third was unlinked
    arena.recycle(["parapipe-1-0-0123456789abcdef"])  # another arena's: ignored
    arena.close()
    assert ours() == []


def test_no_spare_when_shared_memory_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments, "_SPARE_HEADROOM", 1 << 40)
    arena = SegmentArena(spare=True)
    msg = encode(big_array(2), arena=arena)
    assert not arena.wait_spare(60)
    assert ours() == segment_names(msg)
    release(segment_names(msg))
    arena.close()


def test_small_stores_ask_for_no_spare() -> None:
    arena = SegmentArena(spare=True)
    msg = encode(np.ones(1000, np.float32), arena=arena, threshold=1024)
    assert not arena.wait_spare(60)
    release(segment_names(msg))
    arena.close()


def test_release_refuses_foreign_names() -> None:
    with pytest.raises(TransportError, match="not a parapipe segment"):
        release(["../../etc/passwd"])


def test_no_file_left_when_writing_fails(arena: SegmentArena) -> None:
    view = memoryview(b"x" * 10)
    view.release()
    with pytest.raises(ValueError):
        arena.store(view)


# --- across processes -------------------------------------------------------------------


def _create_and_hang(conn: Connection, owner_pid: int | None) -> None:
    """Child: create segments, report their names, then wait to be killed."""
    arena = SegmentArena(owner_pid)
    msgs = [encode(np.full(MIB, i, np.float32), arena=arena) for i in range(3)]
    conn.send([n for m in msgs for n in segment_names(m)])
    conn.recv()


def _store_and_keep_a_spare(conn: Connection, owner_pid: int) -> None:
    """Child: one large store, so a spare is made; report it, then wait to be killed."""
    arena = SegmentArena(owner_pid, spare=True)
    names = segment_names(encode(big_array(2), arena=arena))
    assert arena.wait_spare(60)
    conn.send(names)
    conn.recv()


@pytest.fixture
def spawn() -> mp.context.SpawnContext:
    return mp.get_context("spawn")


def test_sweep_after_sigkilled_child(spawn: Any) -> None:
    """A worker creates segments in the engine's name, then dies: the engine's sweep finds them."""
    parent, child = spawn.Pipe()
    proc = spawn.Process(target=_create_and_hang, args=(child, os.getpid()))
    proc.start()
    names = parent.recv()
    assert sorted(names) == ours()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    assert sweep(os.getpid()) == 3
    assert ours() == []


def test_sweep_dead_takes_dead_owners_only(arena: SegmentArena, spawn: Any) -> None:
    parent, child = spawn.Pipe()
    proc = spawn.Process(target=_create_and_hang, args=(child, None))  # owner: the child
    proc.start()
    names = parent.recv()
    mine = encode(big_array(2), arena=arena)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert ours(proc.pid) == sorted(names)
    assert sweep_dead() >= 3
    assert ours(proc.pid) == []
    assert ours() == segment_names(mine)  # a live owner keeps its segments
    release(segment_names(mine))


def test_sweep_spares_takes_a_dead_makers_spare_only(spawn: Any) -> None:
    parent, child = spawn.Pipe()
    proc = spawn.Process(target=_store_and_keep_a_spare, args=(child, os.getpid()))
    proc.start()
    names = parent.recv()
    spare = [n for n in ours() if n not in names]
    assert len(spare) == 1 and f"-spare-{proc.pid}-" in spare[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert transport.sweep_spares(os.getpid()) == 0  # not a maker
    assert transport.sweep_spares(proc.pid) == 1
    assert ours() == names  # the segment it sent is data, not a spare
    release(names)


def test_sweep_dead_counts_a_zombie_as_dead() -> None:
    pid = os.posix_spawn("/bin/true", ["true"], os.environ)
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        name = SegmentArena(pid).store(memoryview(b"x" * 16))
        assert sweep_dead() >= 1
        assert name not in os.listdir(transport.SHM_DIR)
    finally:
        os.waitpid(pid, 0)
