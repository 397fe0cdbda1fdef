"""merge_result and analysis_graph: the per-file JSON, in-process and through the engine."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import parapipe as pp
from parapipe.audio import analysis_graph, merge_result

from .conftest import Corpus, require_audio_extra

pytestmark = pytest.mark.audio

SCHEMA = {"file", "duration", "text", "language", "speaker", "speakers", "gender",
          "gender_confidence", "age", "turns", "segments", "timings", "error"}

BASE = {"file": "a.wav", "duration": 4.0, "timings": {"decode": 0.01, "vad": 0.02}}
TRANSCRIPT = {
    **BASE, "timings": {**BASE["timings"], "transcribe": 1.0}, "text": "hi there bye now",
    "language": "en",
    # One Whisper segment across a change of speaker at 1.5 s, with no pause.
    "segments": [{"start": 0.0, "end": 4.0, "text": "hi there bye now",
                  "words": [[0.0, 0.5, "hi"], [0.5, 1.4, "there"],
                            [1.5, 2.6, "bye"], [2.6, 3.9, "now"]]}],
}
SPEAKERS = {
    **BASE, "timings": {**BASE["timings"], "speaker": 0.2}, "speaker": "unknown-1",
    "speakers": ["ann", "unknown-1"],
    "turns": [{"start": 0.0, "end": 1.5, "speaker": "ann", "score": 0.9},
              {"start": 1.5, "end": 4.0, "speaker": "unknown-1", "score": 1.0}],
}
FRAMES = np.arange(0.0, 4.0, 0.032)
VOICE = {**BASE, "timings": {**BASE["timings"], "gender_age": 0.1}, "gender": "male",
         "gender_confidence": 0.9, "age": None,
         # A woman at 220 Hz until 1.5 s, then a man at 110 Hz: 1.5 s and 2.5 s voiced.
         "voice_track": {"time": FRAMES.tolist(), "f0": np.where(FRAMES < 1.5, 220.0, 110.0).tolist(),
                         "spacing": [float("nan")] * len(FRAMES)}}


def test_merge_gives_each_turn_its_own_words_and_gender() -> None:
    merged = merge_result({"transcribe": TRANSCRIPT, "speaker": SPEAKERS, "gender_age": VOICE})
    assert set(merged) == SCHEMA
    assert [{k: t[k] for k in ("start", "end", "speaker", "text", "gender")} for t in merged["turns"]] == [
        {"start": 0.0, "end": 1.5, "speaker": "ann", "text": "hi there", "gender": "female"},
        {"start": 1.5, "end": 4.0, "speaker": "unknown-1", "text": "bye now", "gender": "male"},
    ]
    assert all(0.5 < t["gender_confidence"] <= 1.0 for t in merged["turns"])
    assert merged["segments"] == [
        {"start": 0.0, "end": 4.0, "text": "hi there bye now", "speaker": "unknown-1", "gender": "male"}]
    assert merged["timings"] == {"decode": 0.01, "vad": 0.02, "transcribe": 1.0,
                                 "speaker": 0.2, "gender_age": 0.1}
    assert (merged["gender"], merged["age"], merged["error"]) == ("male", None, None)
    json.dumps(merged, allow_nan=False)


def test_merge_without_word_times_gives_each_segment_to_its_turn() -> None:
    plain = {**TRANSCRIPT, "segments": [{"start": 0.0, "end": 1.2, "text": "hi there"},
                                        {"start": 1.6, "end": 3.9, "text": "bye now"}]}
    merged = merge_result({"t": plain, "s": SPEAKERS})
    assert [(t["speaker"], t["text"], t["gender"]) for t in merged["turns"]] == [
        ("ann", "hi there", None), ("unknown-1", "bye now", None)]
    assert merged["gender"] is None


def test_a_turn_with_nothing_voiced_has_no_gender() -> None:
    silent = {**VOICE, "voice_track": {"time": [], "f0": [], "spacing": []}}
    merged = merge_result({"s": SPEAKERS, "g": silent})
    assert [(t["gender"], t["gender_confidence"]) for t in merged["turns"]] == [(None, 0.0), (None, 0.0)]


def test_merge_of_one_branch_fills_the_rest_with_none() -> None:
    merged = merge_result({"speaker": SPEAKERS})
    assert set(merged) == SCHEMA
    assert merged["text"] is None and merged["segments"] == []
    assert [t["text"] for t in merged["turns"]] == [None, None]


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
    assert [t["speaker"] for t in merged["turns"]] == [t["speaker"] for t in turns]
    assert [t["gender"] for t in merged["turns"]] == ["male", "female", "male"]
    assert "football" in merged["turns"][1]["text"]
    assert set(merged["timings"]) == {"decode", "vad", "transcribe", "speaker", "gender_age"}


def test_analysis_graph_passes_the_speaker_counts() -> None:
    require_audio_extra()
    from parapipe.graph import map_stages

    stages: list[Any] = []
    map_stages(analysis_graph(plan=None, min_speakers=2, max_speakers=3), lambda s: stages.append(s) or s)
    speaker = next(s for s in stages if s.stage_name == "speaker")
    assert (speaker.num_speakers, speaker.min_speakers, speaker.max_speakers) == (None, 2, 3)


@pytest.mark.slow
def test_engine_runs_the_graph_in_workers(corpus: Corpus, voices_db: Path) -> None:
    files = [str(corpus.path("test/carol_1.wav")), str(corpus.path("broken/text.mp3"))]
    with pp.Engine(analysis_graph(voices=voices_db)) as engine:
        good, bad = engine.map(files, return_exceptions=True)
    assert (good["speaker"], good["gender"], good["error"]) == ("carol", "female", None)
    assert isinstance(bad, pp.StageError)
    assert bad.to_dict()["exc_type"].endswith("NotAudio")


def test_stream_messages_carry_the_turns_in_stream_time() -> None:
    pytest.importorskip("starlette")
    from parapipe.audio.serving import Utterance, final_message, segment_message

    utterance = Utterance(index=0, start=10.0, end=14.0, pcm=b"")
    merged = merge_result({"transcribe": TRANSCRIPT, "speaker": SPEAKERS, "gender_age": VOICE})
    message = segment_message(utterance, {"result": merged})
    assert [(t["start"], t["end"], t["speaker"], t["text"]) for t in message["turns"]] == [
        (10.0, 11.5, "ann", "hi there"), (11.5, 14.0, "unknown-1", "bye now")]
    assert final_message([message], 14.0)["turns"] == message["turns"]
