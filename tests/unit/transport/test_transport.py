"""Shared-memory transport, the wire: round trips, zero copy, the plain-pickle fast path, failures.

Every test checks that no segment of this process is left in /dev/shm. The cross-process
test spawns a real child (the engine's start method) and joins it.
"""

from __future__ import annotations

import errno
import gc
import logging
import multiprocessing as mp
import os
import pickle
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest

from parapipe import transport
from parapipe.errors import ConfigError, ParapipeError
from parapipe.transport import (
    SegmentArena,
    TransportError,
    decode,
    encode,
    encode_with_names,
    release,
    segment_names,
    segments,
    wire,
)

from ._shm import MIB, big_array, checksum, ours, roundtrip

# --- round trips -----------------------------------------------------------------------


def test_pack_keeps_small_values_and_wraps_large_ones(arena: SegmentArena) -> None:
    small = {"text": "hello", "n": [1, 2, 3]}
    assert transport.pack(small, arena=arena) is small
    assert transport.pack(7, arena=arena) == 7
    a = big_array(4)
    packed = transport.pack({"audio": a}, arena=arena).adopt()
    assert type(packed) is transport.Packed
    sent = pickle.dumps(packed, protocol=5)
    assert len(sent) < 1024  # only names travel; the array stays in its segment
    assert checksum(transport.unpacked(pickle.loads(sent))["audio"]) == checksum(a)
    assert len(ours()) == 1
    del packed
    gc.collect()
    assert ours() == []  # the owner released its segment when it died


def test_a_received_packed_does_not_release_what_it_does_not_own(arena: SegmentArena) -> None:
    owner = transport.pack(big_array(2), arena=arena).adopt()
    copy = pickle.loads(pickle.dumps(owner))
    del copy
    gc.collect()
    assert len(ours()) == 1
    del owner
    gc.collect()


def test_32mib_float32_goes_through_one_segment(arena: SegmentArena) -> None:
    a = big_array()
    msg = encode(a, arena=arena)
    assert len(msg) < 256  # nothing large through the pipe
    assert len(segment_names(msg)) == 1
    b = decode(msg)
    release(segment_names(msg))
    assert b.dtype == np.float32 and b.shape == a.shape
    assert np.array_equal(a, b)
    assert not b.flags.owndata  # a view on the mapping, not a copy
    assert b.flags.writeable
    assert arena.segments_created == 1 and arena.bytes_written == a.nbytes


def test_decoded_arrays_outlive_release(arena: SegmentArena) -> None:
    a = big_array(2)
    msg = encode(a, arena=arena)
    b = decode(msg)
    assert release(segment_names(msg)) == 1
    assert release(segment_names(msg)) == 0  # idempotent
    assert ours() == []
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "make",
    [
        lambda: big_array(4).reshape(1024, 1024)[:, ::2],  # strided
        lambda: big_array(4).reshape(1024, 1024).T,  # Fortran order
        lambda: big_array(4).reshape(1024, 1024)[::-1],  # negative stride
    ],
    ids=["strided", "fortran", "reversed"],
)
def test_non_contiguous_arrays(arena: SegmentArena, make: Any) -> None:
    a = make()
    b, msg = roundtrip(a, arena)
    assert len(msg) < 256
    assert np.array_equal(a, b)
    assert b.dtype == a.dtype and b.shape == a.shape


def test_fortran_order_is_kept(arena: SegmentArena) -> None:
    a = np.asfortranarray(big_array(4).reshape(1024, 1024))
    b, _ = roundtrip(a, arena)
    assert b.flags.f_contiguous and np.array_equal(a, b)


def test_zero_dim_and_empty_arrays_stay_in_band(arena: SegmentArena) -> None:
    for a in (np.float32(3.5), np.array(7.0), np.zeros((0, 5), np.int16)):
        b, msg = roundtrip(a, arena)
        assert segment_names(msg) == []
        assert np.array_equal(a, b) and np.shape(a) == np.shape(b)
    assert arena.segments_created == 0


def test_object_dtype_falls_back_in_band(arena: SegmentArena) -> None:
    """Object arrays hold pointers: they must be pickled element by element, never as raw bytes."""
    a = np.array([f"item-{i}" for i in range(200_000)], dtype=object)
    assert a.nbytes >= MIB
    b, msg = roundtrip(a, arena)
    assert len(msg) < 256  # the pickle itself went through a segment
    assert b.dtype == object and list(a) == list(b)


def test_bytes_and_bytearray_above_threshold(arena: SegmentArena) -> None:
    for data in (os.urandom(3 * MIB), bytearray(os.urandom(3 * MIB))):
        back, msg = roundtrip(data, arena)
        assert type(back) is type(data) and back == data
        assert len(msg) < 256


def test_memoryviews_keep_format_shape_and_readonly(arena: SegmentArena) -> None:
    raw = big_array(4)
    cases = [
        memoryview(raw.tobytes()),  # read-only bytes
        memoryview(bytearray(raw.tobytes())),  # writable
        memoryview(raw).cast("B").cast("f", (1024, 1024)),  # 2-D floats
        memoryview(raw.tobytes())[::2],  # non-contiguous: sent as a copy
        memoryview(b"tiny"),  # below the threshold: in-band
    ]
    for view in cases:
        back, _ = roundtrip(view, arena)
        assert type(back) is memoryview
        assert (back.format, back.shape, back.readonly) == (view.format, view.shape, view.readonly)
        assert back.tobytes() == view.tobytes()


def test_unsendable_memoryview_is_a_pickling_error(arena: SegmentArena) -> None:
    view = memoryview(np.zeros(4, dtype=">i4"))  # non-native format: cannot be rebuilt
    with pytest.raises(pickle.PicklingError, match="memoryview of format"):
        encode(view, arena=arena)


def test_nested_containers_of_arrays(arena: SegmentArena) -> None:
    arrays = [big_array(2, seed=i) for i in range(3)]
    obj = {"clips": arrays[:2], "meta": {"emb": arrays[2], "name": "x", "small": np.ones(8)}}
    back, msg = roundtrip(obj, arena)
    assert len(segment_names(msg)) == 3
    assert len(msg) < 1024
    for a, b in zip(arrays, [*back["clips"], back["meta"]["emb"]], strict=True):
        assert np.array_equal(a, b)
    assert back["meta"]["name"] == "x" and np.array_equal(back["meta"]["small"], np.ones(8))


def test_large_bytes_beside_arrays(arena: SegmentArena) -> None:
    """bytes stay in the pickle, which then goes to a segment of its own."""
    obj = {"audio": os.urandom(2 * MIB), "pcm": big_array(2)}
    back, msg = roundtrip(obj, arena)
    assert len(segment_names(msg)) == 2 and len(msg) < 256
    assert back["audio"] == obj["audio"] and np.array_equal(back["pcm"], obj["pcm"])


def test_same_array_twice_is_sent_once(arena: SegmentArena) -> None:
    a = big_array(2)
    back, msg = roundtrip([a, a], arena)
    assert len(segment_names(msg)) == 1
    assert back[0] is back[1]


def test_threshold_boundary() -> None:
    at, below = np.zeros(256, np.float32), np.zeros(255, np.float32)  # 1024 and 1020 bytes
    arena = SegmentArena()
    release(segment_names(encode(at, arena=arena, threshold=1024)))
    assert arena.bytes_written == 1024  # the buffer alone, out of band
    arena = SegmentArena()
    release(segment_names(encode(below, arena=arena, threshold=1024)))
    # in-band; the pickle, now itself >= 1024 bytes, went to a segment whole
    assert arena.bytes_written == len(pickle.dumps(below, protocol=5))


def test_bad_threshold(arena: SegmentArena) -> None:
    with pytest.raises(ConfigError):
        encode(b"x", arena=arena, threshold=0)


def test_the_default_threshold_is_the_pipe_message_limit(arena: SegmentArena) -> None:
    """What production passes: a 64 KiB array goes out of band, a 16 KiB one stays in the pickle."""
    assert transport.DEFAULT_THRESHOLD == transport.PIPE_MESSAGE_LIMIT == 32 * 1024
    _, msg = roundtrip(np.zeros(16 * 1024, np.float32), arena)
    assert len(segment_names(msg)) == 1 and len(msg) < 256
    _, msg = roundtrip(np.zeros(4 * 1024, np.float32), arena)
    assert segment_names(msg) == []


# --- encode_with_names: the names without parsing the message again ----------------------


@pytest.mark.parametrize(
    "obj",
    [
        {"small": 1},
        big_array(1),
        {"pickle": os.urandom(MIB), "arrays": [big_array(1, seed=1), big_array(1, seed=2)]},
    ],
    ids=["in-band", "one-array", "pickle-and-arrays"],
)
def test_encode_with_names_gives_the_names_in_the_message(arena: SegmentArena, obj: Any) -> None:
    msg, names = encode_with_names(obj, arena=arena)
    assert names == segment_names(msg)
    assert sorted(names) == ours()
    assert pickle.dumps(decode(msg), protocol=5) == pickle.dumps(obj, protocol=5)
    release(names)


def test_encode_with_names_has_none_when_storing_fails(arena: SegmentArena, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments, "SHM_DIR", "/nonexistent/parapipe-shm")
    msg, names = encode_with_names(big_array(2), arena=arena)
    assert names == segment_names(msg) == []


# --- small objects: the plain pickle fast path -------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [None, 3, "text", {"a": [1, 2.0, "x"]}, np.arange(10), b"x" * 1000, [np.ones(100)] * 5],
    ids=["none", "int", "str", "dict", "small-array", "bytes", "list-of-arrays"],
)
def test_small_objects_never_touch_shared_memory(arena: SegmentArena, obj: Any) -> None:
    msg = encode(obj, arena=arena)
    assert msg == pickle.dumps(obj, protocol=5)  # the message is the plain pickle
    assert segment_names(msg) == []
    assert arena.segments_created == 0
    back = decode(msg)
    assert pickle.dumps(back, protocol=5) == msg


def test_decode_accepts_any_plain_pickle() -> None:
    assert decode(pickle.dumps({"k": 1}, protocol=2)) == {"k": 1}


# --- isolation and resources ------------------------------------------------------------


def test_writes_to_a_decoded_array_stay_private(arena: SegmentArena) -> None:
    """A retry or a second branch decoding the same message must see the original data."""
    a = big_array(2)
    msg = encode(a, arena=arena)
    first = decode(msg)
    first *= 2
    second = decode(msg)
    release(segment_names(msg))
    assert np.array_equal(second, a)
    assert np.array_equal(first, a * 2)


def test_live_arrays_hold_no_file_descriptors(arena: SegmentArena) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    msgs = [encode(big_array(1, seed=i), arena=arena) for i in range(40)]
    arrays = [decode(m) for m in msgs]
    release(n for m in msgs for n in segment_names(m))
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    assert all(a.shape == (MIB // 4,) for a in arrays)


def test_mapping_goes_when_the_last_view_dies(arena: SegmentArena) -> None:
    msg = encode(big_array(2), arena=arena)
    (name,) = segment_names(msg)
    b = decode(msg)
    view = b[10:20]
    release([name])
    del b
    gc.collect()
    assert name in _mapped()  # the slice still needs it
    assert view.shape == (10,)
    del view
    gc.collect()
    assert name not in _mapped()


def _mapped() -> str:
    with open("/proc/self/maps") as f:
        return f.read()


# --- failures ---------------------------------------------------------------------------


def test_missing_segment_is_a_transport_error(arena: SegmentArena) -> None:
    msg = encode(big_array(2), arena=arena)
    release(segment_names(msg))
    with pytest.raises(TransportError, match="is gone") as info:
        decode(msg)
    assert isinstance(info.value, ParapipeError)


def test_corrupt_header_is_a_transport_error(arena: SegmentArena) -> None:
    msg = encode(big_array(2), arena=arena)
    names = segment_names(msg)
    try:
        with pytest.raises(TransportError, match="corrupt"):
            decode(msg[:12])
    finally:
        release(names)


def test_no_file_left_when_writing_fails(arena: SegmentArena) -> None:
    view = memoryview(b"x" * 10)
    view.release()
    with pytest.raises(ValueError):
        arena.store(view)


def test_storage_failure_falls_back_in_band(caplog: pytest.LogCaptureFixture) -> None:
    """With /dev/shm full (ENOSPC), data still flows, through the pipe, and nothing leaks."""

    class FullAfterOne(SegmentArena):
        def store(self, data: memoryview) -> str:
            if self.segments_created:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().store(data)

    wire._warn_once.cache_clear()
    arrays = [big_array(2, seed=1), big_array(2, seed=2)]
    with caplog.at_level(logging.WARNING, logger="parapipe.transport"):
        msg = encode(arrays, arena=FullAfterOne())
    assert segment_names(msg) == []
    assert len(msg) > 4 * MIB
    assert all(np.array_equal(a, b) for a, b in zip(arrays, decode(msg), strict=True))
    assert "No space left on device" in caplog.text and "--shm-size" in caplog.text


def test_missing_shm_dir_falls_back_in_band(
    arena: SegmentArena, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(segments, "SHM_DIR", str(tmp_path / "absent"))
    a = big_array(2)
    msg = encode(a, arena=arena)
    assert segment_names(msg) == [] and np.array_equal(decode(msg), a)


# --- across processes -------------------------------------------------------------------


def _echo(conn: Connection, owner_pid: int) -> None:
    """Child: decode each message, reply with its checksum and the object re-encoded."""
    arena = SegmentArena(owner_pid)
    while msg := conn.recv_bytes():
        obj = decode(msg)
        conn.send_bytes(encode({"sum": checksum(obj), "echo": obj}, arena=arena))
    conn.close()


def test_echo_through_a_spawned_child(arena: SegmentArena) -> None:
    spawn = mp.get_context("spawn")
    parent, child = spawn.Pipe()
    proc = spawn.Process(target=_echo, args=(child, os.getpid()))
    proc.start()
    child.close()
    try:
        a = big_array()
        request = encode(a, arena=arena)
        parent.send_bytes(request)
        reply = parent.recv_bytes()
        assert len(reply) < 1024
        out = decode(reply)
        assert out["sum"] == checksum(a) == checksum(out["echo"])
        # Forward the reply untouched: the child maps the same segments again.
        parent.send_bytes(reply)
        second = parent.recv_bytes()
        assert decode(second)["echo"]["sum"] == checksum(a)
        names = [n for m in (request, reply, second) for n in segment_names(m)]
        assert sorted(names) == ours()  # the child named its segments after the parent
        assert release(names) == 3
    finally:
        parent.send_bytes(b"")
        proc.join()
    assert proc.exitcode == 0
