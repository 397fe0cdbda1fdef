"""The README's quickstart and the audio commands, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Corpus, require_audio_extra

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.audio, pytest.mark.slow]


def _parapipe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parapipe.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_quickstart_analyses_the_sample_and_prints_the_merged_result():
    require_audio_extra()
    done = _parapipe("audio", "analyze", "examples/data/two_speakers.wav")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["error"] is None and result["language"] == "en"
    assert "football" in result["text"]
    assert len(result["segments"]) == 3 and len(set(result["speakers"])) == 2
    assert set(result["timings"]) == {"decode", "vad", "transcribe", "speaker", "gender_age"}


def test_enroll_then_analyze_names_the_speaker_and_reports_broken_files(corpus: Corpus, tmp_path: Path):
    voices, out = tmp_path / "voices.db", tmp_path / "out.jsonl"
    enroll_clips = [str(p) for p, label in corpus.files("enroll") if label["speaker"] == "carol"]
    assert _parapipe("audio", "enroll", "carol", *enroll_clips, "--voices", str(voices)).returncode == 0
    listing = _parapipe("audio", "voices", "--voices", str(voices)).stdout
    assert "carol" in listing and "enrolled" in listing
    files = [str(corpus.path("test/carol_1.wav")), str(corpus.path("broken/text.mp3"))]
    done = _parapipe("audio", "analyze", *files, "--voices", str(voices), "--out", str(out), "--no-progress")
    assert done.returncode == 1  # one file failed, and says so
    good, bad = (json.loads(line) for line in out.read_text().splitlines())
    assert good["speaker"] == "carol" and good["error"] is None
    assert bad["error"]["type"] == "StageError" and bad["error"]["exc_type"].endswith("NotAudio")
