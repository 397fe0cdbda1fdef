"""Speaker: enrolled people by name, strangers as stable unknown-N, turns in a dialogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from parapipe.audio import Speaker, VoiceRegistry

from .conftest import Corpus

pytestmark = pytest.mark.audio


def _speaker(voices: Path | None) -> Speaker:
    stage = Speaker(voices)
    stage.setup()
    return stage


@pytest.fixture
def speaker(voices_db: Path) -> Speaker:
    stage = _speaker(voices_db)
    yield stage
    stage.teardown()


def test_calibrated_threshold_is_between_voices(enrolled_db: Path) -> None:
    with VoiceRegistry(enrolled_db) as registry:
        assert 0.7 < registry.threshold < 0.9
        assert sorted(v.label for v in registry.list()) == ["alan", "bruce", "carol", "diana"]


def test_enrolled_named_and_unknowns_labelled_consistently(
    corpus: Corpus, clips: dict[str, Any], speaker: Speaker
) -> None:
    found: dict[str, list[str]] = {}
    for path, label in corpus.files("test"):
        result = speaker.process(clips[str(path.relative_to(corpus.root))])
        found.setdefault(label["speaker"], []).append(result["speaker"])
        assert set(result["timings"]) == {"decode", "vad", "speaker"}
    enrolled = [(truth, got) for truth, gots in found.items() for got in gots
                if corpus.labels["speakers"][truth]["enrolled"]]
    accuracy = sum(truth == got for truth, got in enrolled) / len(enrolled)
    assert accuracy >= 0.9, found
    unknown = {truth: set(gots) for truth, gots in found.items()
               if not corpus.labels["speakers"][truth]["enrolled"]}
    assert all(len(labels) == 1 for labels in unknown.values()), unknown
    labels = [next(iter(s)) for s in unknown.values()]
    assert len(set(labels)) == len(labels) and all(x.startswith("unknown-") for x in labels)


def test_a_restarted_worker_keeps_the_unknown_labels(
    clips: dict[str, Any], voices_db: Path
) -> None:
    first = _speaker(voices_db)
    before = first.process(clips["test/edgar_1.wav"])["speaker"]
    first.teardown()
    second = _speaker(voices_db)  # a new process would do exactly this
    assert second.process(clips["test/edgar_2.wav"])["speaker"] == before
    second.teardown()


def test_two_speaker_file_gets_a_label_per_turn(
    corpus: Corpus, clips: dict[str, Any], speaker: Speaker
) -> None:
    result = speaker.process(clips["multi/two_speakers.wav"])
    turns = corpus.labels["files"]["multi/two_speakers.wav"]["turns"]
    assert [s["speaker"] for s in result["turns"]] == [t["speaker"] for t in turns]
    assert result["speakers"] == ["alan", "carol"]
    assert result["speaker"] == "alan"  # most speech time


def test_without_a_registry_file_labels_hold_within_the_worker(clips: dict[str, Any]) -> None:
    stage = _speaker(None)
    labels = {stage.process(clips[f"test/fiona_{k}.wav"])["speaker"] for k in (1, 2, 3)}
    assert labels == {"unknown-1"}
    stage.teardown()
