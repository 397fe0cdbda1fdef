"""Per-item errors of the speech stages: the input is bad, not the worker.

The tree::

    ValueError
     +-- AudioDecodeError        the input could not be turned into 16 kHz mono samples
          +-- EmptyAudio         zero bytes, or a valid header with no samples
          +-- TruncatedAudio     a known format that ends early (cut header or cut data)
          +-- NotAudio           no decoder recognises the bytes (text, random data)
          +-- UnsupportedAudio   a recognised container with nothing we can decode in it
          +-- AudioTooLong       longer than the stage's ``max_seconds``

They subclass `ValueError` so code that does not know parapipe still treats them as bad
input; the engine reports them as ``StageError(exc_type="EmptyAudio", message=...)``. Every
message names the file, so a batch report says which input to look at without a traceback.
"""

from __future__ import annotations

__all__ = [
    "AudioDecodeError",
    "AudioTooLong",
    "EmptyAudio",
    "NotAudio",
    "TruncatedAudio",
    "UnsupportedAudio",
]


class AudioDecodeError(ValueError):
    """The input could not be decoded to audio samples.

    Attributes:
        file: the path, or a short description of in-memory input (``<bytes>``).
    """

    def __init__(self, file: str, detail: str) -> None:
        self.file = file
        self.detail = detail
        super().__init__(f"{file}: {detail}")

    def __reduce__(self) -> tuple[type[AudioDecodeError], tuple[str, str]]:
        # The default reduce would pass the formatted message as the only argument.
        return (type(self), (self.file, self.detail))


class EmptyAudio(AudioDecodeError):
    """The input holds no samples at all."""


class TruncatedAudio(AudioDecodeError):
    """The format is recognised but the data stops before the header says it should."""


class NotAudio(AudioDecodeError):
    """No decoder recognises the data as audio."""


class UnsupportedAudio(AudioDecodeError):
    """The container is recognised but holds no audio stream we can decode."""


class AudioTooLong(AudioDecodeError):
    """The audio is longer than the configured limit; refused before it is decoded in full."""
