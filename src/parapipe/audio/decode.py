"""Turn whatever the caller has (a path, an encoded file's bytes, raw PCM) into 16 kHz mono.

Two decoders, tried in order:

1. libsndfile (``soundfile``): WAV, FLAC, OGG, MP3, AIFF. Exact, fast, and it reports the
   frame count the header declares, which is how a cut-off file is told from a short one.
2. FFmpeg (``av``): everything else (M4A/AAC, Opus, WebM, video containers with audio).

Errors are sorted by what the two decoders saw: neither recognised the bytes → `NotAudio`;
a decoder recognised the format but could not read it through → `TruncatedAudio`; FFmpeg
opened a container without an audio stream or codec it can decode → `UnsupportedAudio`.
Length is checked from the header before decoding, so a 10-hour upload is refused in
milliseconds rather than after gigabytes of samples (`AudioTooLong`).
"""

from __future__ import annotations

import io
import os
import time
import wave
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

import parapipe as pp

from .clip import SAMPLE_RATE, AudioClip
from .errors import (
    AudioTooLong,
    EmptyAudio,
    NotAudio,
    TruncatedAudio,
    UnsupportedAudio,
)

if TYPE_CHECKING:
    from .serving import SpeechAdapter

__all__ = ["DEFAULT_MAX_MEMORY", "DEFAULT_MAX_SECONDS", "MAX_CHANNELS", "MAX_NATIVE_RATE", "Decode", "decode_audio"]

DEFAULT_MAX_SECONDS = 3 * 3600.0
"""Three hours: longer than any meeting we expect, short enough to fit in memory (690 MB)."""

MAX_NATIVE_RATE = 192_000
"""Highest sample rate decoded (Hz); studio masters top out here."""
MAX_CHANNELS = 2
"""Channels of `max_seconds` the decoding budget allows: more channels allow proportionally fewer seconds."""
DEFAULT_MAX_MEMORY = "3GiB"
"""Decode's worker memory cap: three hours of 16 kHz mono (690 MB) with room for decoding; a
file that would need more ends its worker (the item fails) instead of the machine's memory."""
_BLOCK_FRAMES = 1 << 16
"""Native frames decoded at a time (0.3 s at 192 kHz)."""

_SF_NOT_RECOGNISED = 1
"""libsndfile's ``SF_ERR_UNRECOGNISED_FORMAT``; other open errors mean it knew the format."""

_TRUNCATION_TOLERANCE = 0.01
"""MP3 headers round their frame count; only a shortfall above 1 % counts as cut off."""

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | Mapping[str, Any]


class Decode(pp.Stage):
    """Decode one input to an `AudioClip` (16 kHz mono float32).

    Accepts a path, the bytes of an encoded file, ``{"data": bytes, "file": name}``, or raw
    PCM as ``{"pcm16": bytes, "sample_rate": int, "channels": 1, "file": name}``.
    """

    name = "decode"
    cpus = 1
    max_memory = DEFAULT_MAX_MEMORY

    def __init__(self, max_seconds: float = DEFAULT_MAX_SECONDS) -> None:
        if max_seconds <= 0:
            raise pp.ConfigError(f"Decode: max_seconds must be > 0, got {max_seconds!r}")
        self.max_seconds = float(max_seconds)

    def process(self, item: AudioSource) -> AudioClip:
        start = time.perf_counter()
        clip = decode_audio(item, max_seconds=self.max_seconds)
        return clip.with_timing("decode", time.perf_counter() - start)

    def service_adapter(self) -> SpeechAdapter:
        """How ``parapipe serve`` feeds a graph that starts here: audio bytes, never a path a
        client names, and live PCM streams (`parapipe.service.adapters` asks for it)."""
        from .serving import SpeechAdapter  # the web stack loads only when serving

        return SpeechAdapter()


def decode_audio(source: AudioSource, *, max_seconds: float = DEFAULT_MAX_SECONDS) -> AudioClip:
    """Decode ``source`` to 16 kHz mono float32; raise an `AudioDecodeError` subclass if bad."""
    if isinstance(source, Mapping):
        if "pcm16" in source:
            return _from_pcm16(source, max_seconds)
        if "data" in source:
            return _from_bytes(bytes(source["data"]), str(source.get("file", "<bytes>")), max_seconds)
        raise TypeError(f"a dict input needs a 'pcm16' or 'data' key, got keys {sorted(source)}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), "<bytes>", max_seconds)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(os.fspath(source), max_seconds)
    raise TypeError(f"cannot decode a {type(source).__name__}; give a path, bytes or a dict")


def _from_path(path: str, max_seconds: float) -> AudioClip:
    if os.path.getsize(path) == 0:  # FileNotFoundError for a missing file is precise already
        raise EmptyAudio(path, "file is empty (0 bytes)")
    # A file object, not the path: libsndfile then probes by content, never by extension.
    with open(path, "rb") as fh:
        return _decode(fh, path, max_seconds)


def _from_bytes(data: bytes, name: str, max_seconds: float) -> AudioClip:
    if not data:
        raise EmptyAudio(name, "no data (0 bytes)")
    return _decode(io.BytesIO(data), name, max_seconds)


def _from_pcm16(item: Mapping[str, Any], max_seconds: float) -> AudioClip:
    name = str(item.get("file", "<pcm16>"))
    pcm, rate, channels = bytes(item["pcm16"]), item.get("sample_rate"), item.get("channels", 1)
    if not isinstance(rate, int) or rate <= 0:
        raise UnsupportedAudio(name, f"pcm16 needs an int sample_rate > 0, got {rate!r}")
    if not isinstance(channels, int) or channels <= 0:
        raise UnsupportedAudio(name, f"pcm16 channels must be an int > 0, got {channels!r}")
    if not pcm:
        raise EmptyAudio(name, "pcm16 payload is empty")
    if len(pcm) % (2 * channels):
        raise TruncatedAudio(
            name, f"pcm16 payload of {len(pcm)} bytes is not a whole number of "
            f"{channels}-channel 16-bit frames",
        )
    _check_length(name, len(pcm) // (2 * channels) / rate, max_seconds)
    _check_work(name, len(pcm) // (2 * channels), channels, rate, max_seconds)
    samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels)
    starts = range(0, len(samples), _BLOCK_FRAMES)
    blocks = (samples[i : i + _BLOCK_FRAMES].astype(np.float32) / 32768.0 for i in starts)
    mono, _ = _downmix_blocks(blocks, rate)
    return _clip(name, mono, SAMPLE_RATE)


def _decode(fh: BinaryIO, name: str, max_seconds: float) -> AudioClip:
    """libsndfile first; FFmpeg for what it does not know or could not read."""
    try:
        frames, rate = _read_soundfile(fh, name, max_seconds)
    except _SndfileRefused as refused:
        fh.seek(0)
        frames, rate = _read_ffmpeg(fh, name, max_seconds, refused)
    return _clip(name, frames, rate)


class _SndfileRefused(Exception):
    """libsndfile could not open the data; carries whether it recognised the format."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.recognised = code != _SF_NOT_RECOGNISED
        self.message = message


def _read_soundfile(fh: BinaryIO, name: str, max_seconds: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        info = sf.info(fh)
    except sf.LibsndfileError as exc:
        raise _SndfileRefused(exc.code, exc.error_string) from exc
    if info.frames == 0:
        raise EmptyAudio(name, f"{info.format} header is valid but holds no samples")
    _check_length(name, info.frames / info.samplerate, max_seconds)
    _check_work(name, info.frames, info.channels, info.samplerate, max_seconds)
    declared = _declared_frames(fh, info.format, info.frames)
    fh.seek(0)
    try:
        with sf.SoundFile(fh) as f:
            mono, got = _downmix_blocks(f.blocks(_BLOCK_FRAMES, dtype="float32", always_2d=True), f.samplerate)
    except sf.LibsndfileError as exc:
        raise TruncatedAudio(name, f"{info.format} data is damaged or cut short: "
                                   f"{exc.error_string}") from exc
    _check_complete(name, info.format, got, declared, info.samplerate)
    return mono[:, None], SAMPLE_RATE


def _downmix_blocks(blocks: Iterator[np.ndarray], rate: int) -> tuple[np.ndarray, int]:
    """Downmix and resample block by block: memory follows the 16 kHz mono output, never the
    file's native rate and channel count (a 476 KB FLAC of 8 channels at 192 kHz would need
    1.8 GB at once). Returns the output and the native frames read."""
    import soxr

    stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ") if rate != SAMPLE_RATE else None
    out: list[np.ndarray] = []
    got = 0
    for block in blocks:
        got += len(block)
        mono = block.mean(axis=1, dtype=np.float32)
        out.append(stream.resample_chunk(mono) if stream is not None else mono)
    if stream is not None:
        out.append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return (np.concatenate(out) if out else np.zeros(0, dtype=np.float32)), got


def _check_work(name: str, frames: int, channels: int, rate: int, max_seconds: float) -> None:
    """Refuse what would cost more to decode than `max_seconds` of studio audio: the header's
    frames x channels (and so its rate) bound the samples read, whatever the file's size."""
    budget = max_seconds * MAX_NATIVE_RATE * MAX_CHANNELS
    if frames * channels > budget or rate > MAX_NATIVE_RATE:
        raise AudioTooLong(
            name, f"{channels} channels at {rate} Hz for {frames / rate:.1f} s is more audio than the limit "
            f"({max_seconds:g} s of {MAX_CHANNELS} channels at up to {MAX_NATIVE_RATE} Hz); "
            "downmix or resample it first",
        )


def _declared_frames(fh: BinaryIO, fmt: str, sndfile_frames: int) -> int:
    """Frames the header promises. libsndfile trims a WAV's count to the bytes present, so
    a PCM WAV's own header is read with the standard library's `wave`."""
    if fmt != "WAV":
        return sndfile_frames
    fh.seek(0)
    try:
        with wave.open(fh) as wav:
            return max(wav.getnframes(), sndfile_frames)
    except (wave.Error, EOFError):  # float or extensible WAV: wave cannot parse those headers
        return sndfile_frames


def _check_complete(name: str, fmt: str, got: int, declared: int, rate: int) -> None:
    if got == 0:
        raise EmptyAudio(name, f"{fmt} file decodes to no samples")
    if got < declared * (1 - _TRUNCATION_TOLERANCE):
        raise TruncatedAudio(
            name, f"{fmt} header declares {declared / rate:.2f} s but the data ends "
            f"after {got / rate:.2f} s",
        )


def _read_ffmpeg(
    fh: BinaryIO, name: str, max_seconds: float, refused: _SndfileRefused
) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(fh, mode="r")
    except av.error.FFmpegError as exc:
        if refused.recognised:
            raise TruncatedAudio(name, f"header is damaged or cut short: {refused.message}") from exc
        raise NotAudio(name, "not a recognised audio format (libsndfile and FFmpeg both "
                             "refused it)") from exc
    with container:
        if not container.streams.audio:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
            raise UnsupportedAudio(
                name, f"{container.format.name} container has no audio stream "
                f"(streams: {', '.join(kinds)})",
            )
        if container.duration is not None:
            _check_length(name, container.duration / 1e6, max_seconds)
        return _decode_stream(container, name, max_seconds), SAMPLE_RATE


def _decode_stream(container: Any, name: str, max_seconds: float) -> np.ndarray:
    """Decode and resample (FFmpeg's swresample) the first audio stream to 16 kHz mono."""
    import av

    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total, limit = 0, int(max_seconds * SAMPLE_RATE)
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                total += len(chunks[-1])
            if total > limit:  # the container did not declare its duration
                raise AudioTooLong(name, f"longer than the limit of {max_seconds:g} s")
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except av.error.DecoderNotFoundError as exc:
        raise UnsupportedAudio(name, f"no decoder for codec {stream.codec_context.name!r}") from exc
    except av.error.FFmpegError as exc:
        if not chunks:
            raise UnsupportedAudio(name, f"cannot decode {stream.codec_context.name!r}: {exc}") from exc
        raise TruncatedAudio(name, f"data ends early or is damaged: {exc}") from exc
    if not chunks:
        raise EmptyAudio(name, f"{container.format.name} audio stream holds no samples")
    return np.concatenate(chunks)[:, None]


def _check_length(name: str, seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise AudioTooLong(name, f"{seconds:.1f} s is longer than the limit of {max_seconds:g} s")


def _clip(name: str, frames: np.ndarray, rate: int) -> AudioClip:
    """Downmix (channel mean) and resample (soxr) to the one format every model here takes."""
    import soxr

    mono = frames.mean(axis=1) if frames.ndim == 2 else frames
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    audio = np.ascontiguousarray(mono, dtype=np.float32)
    if audio.size == 0:
        raise EmptyAudio(name, "decodes to no samples")
    return AudioClip(file=name, audio=audio, sample_rate=SAMPLE_RATE,
                     duration=len(audio) / SAMPLE_RATE)

