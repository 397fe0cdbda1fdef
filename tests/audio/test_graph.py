"""merge_result and analysis_graph: the per-file JSON, in-process and through the engine."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

import parapipe as pp
from parapipe.audio import analysis_graph, merge_result

from .conftest import Corpus, require_audio_extra

pytestmark = pytest.mark.audio

SCHEMA = {"file", "duration", "text", "language", "speaker", "speakers", "gender",
          "gender_confidence", "age", "segments", "timings", "error"}

BASE = {"file": "a.wav", "duration": 4.0, "timings": {"decode": 0.01, "vad": 0.02}}
TRANSCRIPT = {
    **BASE, "timings": {**BASE["timings"], "transcribe": 1.0}, "text": "hi there bye now",
    "language": "en",
    # One Whisper segment across a change of speaker at 2.1 s.
    "segments": [{"start": 0.0, "end": 4.0, "text": "hi there bye now",
                  "words": [[0.0, 0.5, "hi"], [0.5, 1.0, "there"],
                            [2.2, 2.6, "bye"], [2.6, 3.9, "now"]]}],
}
SPEAKERS = {
    **BASE, "timings": {**BASE["timings"], "speaker": 0.2}, "speaker": "ann",
    "speakers": ["ann", "unknown-1"],
    "segments": [{"start": 0.0, "end": 1.1, "speaker": "ann", "score": 0.9},
                 {"start": 2.1, "end": 4.0, "speaker": "unknown-1", "score": 1.0}],
}
VOICE = {**BASE, "timings": {**BASE["timings"], "gender_age": 0.1}, "gender": "female",
         "gender_confidence": 0.9, "age": None,
         "segments": [{"start": 0.0, "end": 1.1, "gender": "female"},
                      {"start": 2.1, "end": 4.0, "gender": "male"}]}


def test_merge_splits_words_at_speaker_turns() -> None:
    merged = merge_result({"transcribe": TRANSCRIPT, "speaker": SPEAKERS, "gender_age": VOICE})
    assert set(merged) == SCHEMA
    assert merged["segments"] == [
        {"start": 0.0, "end": 1.1, "text": "hi there", "speaker": "ann", "gender": "female"},
        {"start": 2.1, "end": 4.0, "text": "bye now", "speaker": "unknown-1", "gender": "male"},
    ]
    assert merged["timings"] == {"decode": 0.01, "vad": 0.02, "transcribe": 1.0,
                                 "speaker": 0.2, "gender_age": 0.1}
    assert (merged["gender"], merged["age"], merged["error"]) == ("female", None, None)
    json.dumps(merged)


def test_merge_without_word_times_uses_the_largest_overlap() -> None:
    plain = {**TRANSCRIPT, "segments": [{"start": 0.0, "end": 1.8, "text": "hi there"}]}
    merged = merge_result({"t": plain, "s": SPEAKERS})
    assert merged["segments"] == [
        {"start": 0.0, "end": 1.8, "text": "hi there", "speaker": "ann", "gender": None}]
    assert merged["gender"] is None


def test_merge_of_one_branch_fills_the_rest_with_none() -> None:
    merged = merge_result({"speaker": SPEAKERS})
    assert set(merged) == SCHEMA
    assert merged["text"] is None
    assert [s["text"] for s in merged["segments"]] == [None, None]


def test_analysis_graph_composes_picklable_stages() -> None:
    require_audio_extra()  # Transcribe checks model names with faster-whisper
    graph = analysis_graph(max_seconds=60)
    assert isinstance(graph, pp.Pipeline)
    from parapipe.audio import Decode, GenderAge, Segment, Speaker, Transcribe

    for stage in (Decode(), Segment(), Transcribe(), Speaker("v.db"), GenderAge()):
        tuned = stage.options(cpus=2, replicas=2)  # what the engine's planner does
        assert (tuned.cpus, tuned.replicas) == (2, 2)
        assert len(pickle.dumps(tuned)) < 2_000  # only settings travel to the workers


def test_in_process_analysis_of_the_dialogue(
    corpus: Corpus, clips: dict[str, Any], transcriber: Any, gender_stage: Any, voices_db: Path
) -> None:
    from parapipe.audio import Speaker

    speaker = Speaker(voices_db)
    speaker.setup()
    clip = clips["multi/two_speakers.wav"]
    merged = merge_result({"transcribe": transcriber.process(clip),
                           "speaker": speaker.process(clip),
                           "gender_age": gender_stage.process(clip)})
    speaker.teardown()
    turns = corpus.labels["files"]["multi/two_speakers.wav"]["turns"]
    assert [s["speaker"] for s in merged["segments"]] == [t["speaker"] for t in turns]
    assert [s["gender"] for s in merged["segments"]] == ["male", "female", "male"]
    assert "football" in merged["segments"][1]["text"]
    assert set(merged["timings"]) == {"decode", "vad", "transcribe", "speaker", "gender_age"}


@pytest.mark.slow
def test_engine_runs_the_graph_in_workers(corpus: Corpus, voices_db: Path) -> None:
    files = [str(corpus.path("test/carol_1.wav")), str(corpus.path("broken/text.mp3"))]
    with pp.Engine(analysis_graph(voices=voices_db)) as engine:
        good, bad = engine.map(files, return_exceptions=True)
    assert (good["speaker"], good["gender"], good["error"]) == ("carol", "female", None)
    assert isinstance(bad, pp.StageError)
    assert bad.to_dict()["exc_type"].endswith("NotAudio")
