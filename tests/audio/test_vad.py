"""Segment: speech regions from Silero, in seconds, split at the pauses between speakers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from parapipe.audio import AudioClip, Segment
from parapipe.audio.transcribe import speech_windows

from .conftest import Corpus

pytestmark = pytest.mark.audio


def test_speech_clip_has_ordered_segments_inside_it(clips: dict[str, Any]) -> None:
    clip = clips["test/diana_1.wav"]
    assert clip.segments, "no speech found in a speech clip"
    starts = [s for s, _ in clip.segments]
    assert starts == sorted(starts)
    assert all(0 <= s < e <= clip.duration + 1e-3 for s, e in clip.segments)
    assert sum(e - s for s, e in clip.segments) > 0.7 * clip.duration
    assert set(clip.timings) == {"decode", "vad"}


def test_turns_of_the_two_speaker_file_become_segments(
    corpus: Corpus, clips: dict[str, Any]
) -> None:
    turns = corpus.labels["files"]["multi/two_speakers.wav"]["turns"]
    segments = clips["multi/two_speakers.wav"].segments
    assert len(segments) == len(turns)
    for (start, end), turn in zip(segments, turns, strict=True):
        assert start == pytest.approx(turn["start"], abs=0.3)
        assert end == pytest.approx(turn["end"], abs=0.3)


def test_silence_has_no_segments(segmenter: Segment) -> None:
    noise = np.random.default_rng(0).normal(0, 1e-4, 3 * 16_000).astype(np.float32)
    clip = segmenter.process(AudioClip("quiet", noise, 16_000, 3.0))
    assert clip.segments == ()


def test_process_before_setup_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"before setup\(\)"):
        Segment().process(AudioClip("x", np.zeros(160, np.float32), 16_000, 0.01))


@pytest.mark.parametrize(
    ("segments", "windows"),
    [
        ([], []),
        ([(0.0, 2.0), (2.5, 5.0)], [(0.0, 5.0)]),  # short pause: one window
        ([(0.0, 2.0), (6.0, 8.0)], [(0.0, 2.0), (6.0, 8.0)]),  # long pause: no silence fed in
        ([(0.0, 20.0), (20.5, 35.0)], [(0.0, 20.0), (20.5, 35.0)]),  # over 30 s: split
        ([(0.0, 10.0), (10.5, 20.0), (21.0, 29.0), (29.5, 40.0)], [(0.0, 29.0), (29.5, 40.0)]),
    ],
)
def test_speech_windows_merge_pauses_up_to_whisper_window(
    segments: list[tuple[float, float]], windows: list[tuple[float, float]]
) -> None:
    assert speech_windows(segments) == windows
