"""The speech application: decode, find speech, transcribe, identify speakers, gender/age.

Each model is a `parapipe.Stage`, so the engine runs each in its own long-lived workers
with its own CPU budget; `analysis_graph` composes them. Importing this package is cheap:
the model libraries (faster-whisper, torch, librosa, onnxruntime) load inside ``setup()``.
"""

from __future__ import annotations

from .clip import SAMPLE_RATE, AudioClip
from .decode import DEFAULT_MAX_SECONDS, Decode, decode_audio
from .errors import (
    AudioDecodeError,
    AudioTooLong,
    EmptyAudio,
    NotAudio,
    TruncatedAudio,
    UnsupportedAudio,
)
from .gender_age import GenderAge
from .graph import analysis_graph, merge_result
from .speaker import Speaker
from .transcribe import Transcribe
from .vad import Segment
from .voices import VoiceRegistry

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "SAMPLE_RATE",
    "AudioClip",
    "AudioDecodeError",
    "AudioTooLong",
    "Decode",
    "EmptyAudio",
    "GenderAge",
    "NotAudio",
    "Segment",
    "Speaker",
    "Transcribe",
    "TruncatedAudio",
    "UnsupportedAudio",
    "VoiceRegistry",
    "analysis_graph",
    "decode_audio",
    "merge_result",
]
