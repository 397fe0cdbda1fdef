"""Decode: every common format to 16 kHz mono, and a precise error for every bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import parapipe as pp
from parapipe.audio import (
    SAMPLE_RATE,
    AudioTooLong,
    Decode,
    EmptyAudio,
    NotAudio,
    TruncatedAudio,
    UnsupportedAudio,
    decode_audio,
    errors,
)

from .conftest import Corpus, require_audio_extra

pytestmark = pytest.mark.audio

BROKEN = {
    "empty.wav": EmptyAudio,
    "header_only.wav": EmptyAudio,
    "truncated_header.wav": TruncatedAudio,
    "truncated_data.wav": TruncatedAudio,
    "random_bytes.wav": NotAudio,
    "text.mp3": NotAudio,
    "video_only.mkv": UnsupportedAudio,
}


@pytest.fixture(autouse=True)
def _audio_extra() -> None:
    require_audio_extra()


@pytest.mark.parametrize("ext", ["flac", "ogg", "mp3", "m4a"])
def test_compressed_formats_decode_like_the_wav(corpus: Corpus, ext: str) -> None:
    wav = decode_audio(corpus.path("test/alan_1.wav"))
    clip = Decode().process(str(corpus.path(f"formats/alan_1.{ext}")))
    assert clip.sample_rate == SAMPLE_RATE
    assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert clip.duration == pytest.approx(wav.duration, abs=0.15)  # AAC adds priming samples
    assert clip.duration == len(clip.audio) / SAMPLE_RATE
    assert set(clip.timings) == {"decode"}


def test_bytes_and_named_data_decode_like_the_path(corpus: Corpus) -> None:
    path = corpus.path("formats/alan_1.m4a")
    from_path = decode_audio(path)
    from_bytes = decode_audio(path.read_bytes())
    named = decode_audio({"data": path.read_bytes(), "file": "upload.m4a"})
    assert from_bytes.file == "<bytes>" and named.file == "upload.m4a"
    np.testing.assert_array_equal(from_path.audio, from_bytes.audio)
    np.testing.assert_array_equal(from_path.audio, named.audio)


def test_stereo_44k_wav_is_downmixed_and_resampled(tmp_path: Path) -> None:
    import soundfile as sf

    t = np.arange(44_100) / 44_100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "stereo.wav", np.stack([tone, tone], axis=1), 44_100)
    clip = decode_audio(tmp_path / "stereo.wav")
    assert clip.duration == pytest.approx(1.0, abs=1e-3)
    assert np.abs(clip.audio).max() == pytest.approx(0.5, abs=0.02)


def test_pcm16_dict_with_channels_and_rate() -> None:
    pcm = (np.ones((8_000, 2), np.int16) * 16_384).tobytes()
    clip = decode_audio({"pcm16": pcm, "sample_rate": 8_000, "channels": 2, "file": "mic"})
    assert clip.file == "mic"
    assert clip.duration == pytest.approx(1.0, abs=1e-3)
    assert np.median(clip.audio) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize(
    ("item", "error", "words"),
    [
        ({"pcm16": b"", "sample_rate": 16_000}, EmptyAudio, "empty"),
        ({"pcm16": b"\0\0\0", "sample_rate": 16_000}, TruncatedAudio, "3 bytes"),
        ({"pcm16": b"\0\0", "sample_rate": 0}, UnsupportedAudio, "sample_rate"),
        ({"pcm16": b"\0\0" * 32_000, "sample_rate": 16_000}, AudioTooLong, "limit of 1 s"),
        (b"", EmptyAudio, "0 bytes"),
    ],
)
def test_bad_in_memory_input(item: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        decode_audio(item, max_seconds=1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "error"), sorted(BROKEN.items()))
def test_broken_file_raises_its_precise_error(corpus: Corpus, name: str, error: type) -> None:
    path = corpus.path(f"broken/{name}")
    with pytest.raises(errors.AudioDecodeError) as caught:
        Decode().process(str(path))
    assert type(caught.value) is error
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(f"{path}: ")


def test_labels_list_the_same_broken_files(corpus: Corpus) -> None:
    expected = {f"broken/{name}": cls.__name__ for name, cls in BROKEN.items()}
    assert {str(p.relative_to(corpus.root)): label["error"]
            for p, label in corpus.files("broken")} == expected


@pytest.mark.parametrize("rel", ["test/alan_1.wav", "formats/alan_1.m4a"])
def test_too_long_is_refused_from_the_header(corpus: Corpus, rel: str) -> None:
    with pytest.raises(AudioTooLong, match=r"5\.\d s is longer than the limit of 2 s"):
        Decode(max_seconds=2).process(str(corpus.path(rel)))


def test_errors_survive_pickling_between_processes() -> None:
    err = TruncatedAudio("a.wav", "data ends early")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is TruncatedAudio
    assert (again.file, again.detail, str(again)) == ("a.wav", "data ends early", str(err))


def test_missing_file_and_bad_options() -> None:
    with pytest.raises(FileNotFoundError):
        decode_audio("/nonexistent/file.wav")
    with pytest.raises(TypeError, match="pcm16"):
        decode_audio({"samples": b""})
    with pytest.raises(pp.ConfigError, match="max_seconds"):
        Decode(max_seconds=0)
