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
from .transcribe import Transcribe
from .vad import Segment

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "SAMPLE_RATE",
    "AudioClip",
    "AudioDecodeError",
    "AudioTooLong",
    "Decode",
    "EmptyAudio",
    "NotAudio",
    "Segment",
    "Transcribe",
    "TruncatedAudio",
    "UnsupportedAudio",
    "decode_audio",
]
