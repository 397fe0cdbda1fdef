"""Transcribe: accuracy on the corpus, timestamps in the file's time base, model lookup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import parapipe as pp
from parapipe.audio import AudioClip, Transcribe
from parapipe.audio import transcribe as transcribe_module

from .conftest import Corpus, require_audio_extra

pytestmark = pytest.mark.audio

MAX_WER = 0.25


@pytest.fixture(autouse=True)
def _audio_extra() -> None:
    require_audio_extra()


def _wer(references: list[str], hypotheses: list[str]) -> float:
    jiwer = pytest.importorskip("jiwer")
    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                          jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
                          jiwer.ReduceToListOfListOfWords()])
    return jiwer.wer(references, hypotheses, reference_transform=norm, hypothesis_transform=norm)


def test_word_error_rate_on_the_corpus(
    corpus: Corpus, clips: dict[str, Any], transcriber: Transcribe
) -> None:
    refs, hyps = [], []
    for path, label in corpus.files("test"):
        result = transcriber.process(clips[str(path.relative_to(corpus.root))])
        refs.append(label["text"])
        hyps.append(result["text"])
    wer = _wer(refs, hyps)
    assert wer <= MAX_WER, f"WER {wer:.1%} > {MAX_WER:.0%}: " + "; ".join(
        f"{r!r} -> {h!r}" for r, h in zip(refs, hyps, strict=True) if r != h)


def test_result_fields_and_times_in_the_files_time_base(
    corpus: Corpus, clips: dict[str, Any], transcriber: Transcribe
) -> None:
    result = transcriber.process(clips["multi/two_speakers.wav"])
    turns = corpus.labels["files"]["multi/two_speakers.wav"]["turns"]
    assert result["language"] == "en"
    assert result["file"].endswith("two_speakers.wav")
    assert set(result["timings"]) == {"decode", "vad", "transcribe"}
    words = [w for s in result["segments"] for w in s["words"]]
    football = next(w for w in words if "football" in w[2].lower())
    assert turns[1]["start"] <= football[0] <= turns[1]["end"]  # carol's turn, 3.4-6.1 s
    assert _wer([corpus.labels["files"]["multi/two_speakers.wav"]["text"]],
                [result["text"]]) <= MAX_WER


def test_silence_gives_empty_text_without_running_whisper(transcriber: Transcribe) -> None:
    clip = AudioClip("quiet", np.zeros(16_000, np.float32), 16_000, 1.0, segments=())
    result = transcriber.process(clip)
    assert (result["text"], result["segments"]) == ("", [])


def test_without_vad_segments_whisper_runs_its_own_vad(
    clips: dict[str, Any], transcriber: Transcribe
) -> None:
    clip = clips["test/bruce_2.wav"]
    unsegmented = AudioClip(clip.file, clip.audio, clip.sample_rate, clip.duration)
    assert "window" in transcriber.process(unsegmented)["text"].lower()


def test_model_names_are_checked_in_the_parent(tmp_path: Path) -> None:
    with pytest.raises(pp.ConfigError, match="unknown model 'tiny-en'"):
        Transcribe("tiny-en")
    with pytest.raises(pp.ConfigError, match=r"no model\.bin"):
        transcribe_module.resolve_model(str(tmp_path))
    assert Path(transcribe_module.resolve_model(None), "model.bin").is_file()


def test_a_model_that_cannot_be_downloaded_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import faster_whisper.utils

    def offline(name: str, **kwargs: Any) -> str:
        raise OSError("no network")

    monkeypatch.setattr(faster_whisper.utils, "download_model", offline)
    with pytest.raises(pp.ConfigError, match=r"could not be downloaded .*pass its path"):
        transcribe_module.resolve_model("large-v3")
