"""Issue 19, item 3: a small, highly compressed file at a high rate and many channels is decoded
in blocks (memory follows the 16 kHz mono output), refused when it is more audio than the budget,
and Decode caps its worker's memory by default."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from parapipe.audio.decode import DEFAULT_MAX_MEMORY, Decode, decode_audio  # noqa: E402
from parapipe.audio.errors import AudioTooLong  # noqa: E402

RATE = 192_000
CHANNELS = 8


def _bomb(seconds: float) -> bytes:
    """Silent FLAC of ``CHANNELS`` channels at ``RATE`` Hz: a few hundred KB per minute."""
    out = io.BytesIO()
    block = np.zeros((RATE, CHANNELS), dtype=np.int16)
    with sf.SoundFile(out, "w", RATE, CHANNELS, subtype="PCM_16", format="FLAC") as f:
        for _ in range(int(seconds)):
            f.write(block)
    return out.getvalue()


def test_a_high_rate_many_channel_file_decodes_in_bounded_memory() -> None:
    data = _bomb(60)  # 60 s x 8 ch x 192 kHz: 369 MB of float32 if read whole
    assert len(data) < 2_000_000
    tracemalloc.start()
    try:
        clip = decode_audio(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(clip.duration - 60) < 0.01
    assert peak < 80 * 2**20, f"decoding peaked at {peak / 2**20:.0f} MiB"


def test_more_audio_than_the_budget_is_refused_from_the_header() -> None:
    data = _bomb(30)  # 30 s, but 8 channels at 192 kHz: more than 60 s of stereo allows
    with pytest.raises(AudioTooLong, match="channels"):
        decode_audio(data, max_seconds=60)
    with pytest.raises(AudioTooLong, match="channels"):
        decode_audio({"pcm16": b"\0" * (2 * 8 * RATE * 2), "sample_rate": RATE, "channels": 8}, max_seconds=3)


def test_decode_caps_its_worker_memory_by_default() -> None:
    assert Decode().max_memory == DEFAULT_MAX_MEMORY
