"""Make the labelled speech corpus the audio tests and benchmarks run on.

    python scripts/make_corpus.py OUT_DIR

Speech comes from espeak-ng (one voice variant and pitch per speaker), converted by sox to
16 kHz mono 16-bit without dither, so the same espeak-ng and sox versions give the same
bytes. OUT_DIR/labels.json maps each file (relative path) to what it should yield:

    test/     two sentences per clip; text, gender, speaker, enrolled
    enroll/   clips of the enrolled speakers only, with sentences the test clips never use
    multi/    two speakers taking turns, with each turn's times
    formats/  one test clip re-encoded as FLAC, OGG, MP3 and M4A
    broken/   inputs that must fail, with the exception type each must raise

Needs espeak-ng and sox on PATH, plus numpy, soundfile and av (the ``audio`` extra).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16_000
WORDS_PER_MINUTE = "150"  # espeak-ng's default 175 is hard on tiny Whisper models


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng voice variant at a fixed pitch."""

    variant: str
    pitch: int
    gender: str
    enrolled: bool


# Chosen so every pair is apart in resemblyzer's embedding space (cosine < 0.8 between
# speaker centroids) and tiny.en transcribes each voice with a WER under 10 %.
SPEAKERS: dict[str, Voice] = {
    "alan": Voice("en-us+m8", 50, "male", enrolled=True),
    "bruce": Voice("en-us+klatt", 50, "male", enrolled=True),
    "carol": Voice("en-us+f3", 75, "female", enrolled=True),
    "diana": Voice("en-us+steph", 50, "female", enrolled=True),
    "edgar": Voice("en-us+m3", 50, "male", enrolled=False),
    "fiona": Voice("en-us+grandma", 50, "female", enrolled=False),
}

TEST_SENTENCES = [
    "Please call the office before noon tomorrow.",
    "The weather today is sunny and warm.",
    "My brother likes to read books in the garden.",
    "We need more milk and bread from the store.",
    "The children are playing football in the park.",
    "She opened the window to let in some fresh air.",
    "The train was late because of the heavy rain.",
    "Our team finished the project on time.",
    "They are planning a trip to the mountains.",
    "The doctor said that I should rest for a week.",
    "Turn off the lights when you leave the room.",
    "The new library opens next month in the city.",
]

ENROLL_SENTENCES = [
    "Good morning, this is my voice for the record.",
    "I live in a small house near the river.",
    "Music helps me relax after a long day at work.",
    "Every summer we visit our friends by the sea.",
    "The coffee shop on the corner sells fresh cakes.",
    "Reading the news is how I start my day.",
]

TEST_CLIPS = {True: 4, False: 3}  # per speaker: enrolled, unknown
ENROLL_CLIPS = 3
GAP_SECONDS = 0.6


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2 when a tool is missing)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output directory (created; files replaced)")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        print(f"make_corpus: missing {', '.join(missing)} (apt-get install espeak-ng sox)",
              file=sys.stderr)
        return 2
    labels = build(args.out)
    print(f"wrote {len(labels['files'])} files and labels.json to {args.out}")
    return 0


def build(out: Path) -> dict[str, Any]:
    """Write the whole corpus under ``out`` and return the labels also saved there."""
    files: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        synth = _Synth(Path(tmp))
        files.update(_speaker_clips(out, synth))
        files.update(_two_speakers(out, synth))
    files.update(_formats(out, files["test/alan_1.wav"]))
    files.update(_broken(out))
    speakers = {name: vars(v) for name, v in SPEAKERS.items()}
    labels = {"sample_rate": RATE, "speakers": speakers, "files": files}
    (out / "labels.json").write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n")
    return labels


class _Synth:
    """espeak-ng to a 22.05 kHz WAV, then sox to 16 kHz mono 16-bit."""

    def __init__(self, tmp: Path) -> None:
        self.raw = tmp / "espeak.wav"

    def say(self, voice: Voice, text: str, dest: Path) -> np.ndarray:
        """Speak ``text`` into ``dest`` and return its int16 samples."""
        import soundfile as sf

        dest.parent.mkdir(parents=True, exist_ok=True)
        espeak = ["espeak-ng", "-v", voice.variant, "-p", str(voice.pitch),
                  "-s", WORDS_PER_MINUTE, "-w", str(self.raw), text]
        subprocess.run(espeak, check=True)
        # -D: no dither (deterministic); -G: lower gain rather than clip on resampling.
        sox = ["sox", "-D", "-G", str(self.raw), "-r", str(RATE), "-c", "1", "-b", "16",
               str(dest)]
        subprocess.run(sox, check=True)
        samples, _ = sf.read(dest, dtype="int16")
        return samples


def _speaker_clips(out: Path, synth: _Synth) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for index, (name, voice) in enumerate(SPEAKERS.items()):
        for k in range(TEST_CLIPS[voice.enrolled]):
            first = (3 * index + 2 * k) % len(TEST_SENTENCES)
            text = f"{TEST_SENTENCES[first]} {TEST_SENTENCES[(first + 1) % len(TEST_SENTENCES)]}"
            rel = f"test/{name}_{k + 1}.wav"
            synth.say(voice, text, out / rel)
            files[rel] = _label("test", text, name, voice)
        if not voice.enrolled:
            continue
        for k in range(ENROLL_CLIPS):
            text = f"{ENROLL_SENTENCES[2 * k]} {ENROLL_SENTENCES[2 * k + 1]}"
            rel = f"enroll/{name}_{k + 1}.wav"
            synth.say(voice, text, out / rel)
            files[rel] = _label("enroll", text, name, voice)
    return files


def _label(kind: str, text: str, name: str, voice: Voice) -> dict[str, Any]:
    return {"kind": kind, "text": text, "speaker": name, "gender": voice.gender,
            "enrolled": voice.enrolled}


def _two_speakers(out: Path, synth: _Synth) -> dict[str, dict[str, Any]]:
    """alan, carol, alan again: turns apart by a pause, as in a calm dialogue."""
    import soundfile as sf

    script = [("alan", TEST_SENTENCES[0]), ("carol", TEST_SENTENCES[4]),
              ("alan", "See you at the park later.")]
    gap = np.zeros(int(GAP_SECONDS * RATE), np.int16)
    pieces, turns, t = [], [], 0.0
    for i, (name, text) in enumerate(script):
        samples = synth.say(SPEAKERS[name], text, out / "multi" / f"turn{i}.wav")
        (out / "multi" / f"turn{i}.wav").unlink()
        turns.append({"speaker": name, "start": round(t, 3),
                      "end": round(t + len(samples) / RATE, 3), "text": text})
        pieces += [samples, gap]
        t += (len(samples) + len(gap)) / RATE
    rel = "multi/two_speakers.wav"
    sf.write(out / rel, np.concatenate(pieces[:-1]), RATE, subtype="PCM_16")
    label = {"kind": "multi", "text": " ".join(text for _, text in script), "speaker": None,
             "speakers": ["alan", "carol"], "gender": None, "turns": turns}
    return {rel: label}


def _formats(out: Path, source_label: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The same clip in the compressed formats people upload."""
    import soundfile as sf

    samples, _ = sf.read(out / "test/alan_1.wav", dtype="int16")
    (out / "formats").mkdir(parents=True, exist_ok=True)
    sf.write(out / "formats/alan_1.flac", samples, RATE, format="FLAC", subtype="PCM_16")
    sf.write(out / "formats/alan_1.mp3", samples, RATE, format="MP3", subtype="MPEG_LAYER_III")
    # libsndfile gives each OGG a random stream serial; FFmpeg's bitexact mode does not.
    _encode(out / "formats/alan_1.ogg", samples, "ogg", "libopus")
    _encode(out / "formats/alan_1.m4a", samples, "mp4", "aac")  # libsndfile cannot read it
    names = ("alan_1.flac", "alan_1.mp3", "alan_1.ogg", "alan_1.m4a")
    return {f"formats/{name}": {**source_label, "kind": "format"} for name in names}


_BITEXACT = {"fflags": "+bitexact"}
"""Muxer flag: no random stream ids or timestamps, so reruns write identical bytes."""


def _encode(path: Path, samples: np.ndarray, fmt: str, codec: str) -> None:
    """Encode 16 kHz mono int16 samples with FFmpeg (PyAV)."""
    import av

    with av.open(str(path), "w", format=fmt, options=_BITEXACT) as container:
        stream = container.add_stream(codec, rate=48_000 if codec == "libopus" else RATE,
                                      layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        frame.sample_rate = RATE
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _broken(out: Path) -> dict[str, dict[str, Any]]:
    """Inputs that must fail, each with the exception `Decode` must raise for it."""
    import soundfile as sf

    broken = out / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    wav = (out / "test/bruce_1.wav").read_bytes()
    (broken / "empty.wav").write_bytes(b"")
    sf.write(broken / "header_only.wav", np.zeros(0, np.int16), RATE, subtype="PCM_16")
    (broken / "truncated_header.wav").write_bytes(wav[:30])
    (broken / "truncated_data.wav").write_bytes(wav[: len(wav) * 2 // 5])
    (broken / "random_bytes.wav").write_bytes(random.Random(0).randbytes(4000))
    (broken / "text.mp3").write_text("This is a text file, not an MP3.\n")
    _write_video_only(broken / "video_only.mkv")
    errors = {
        "empty.wav": "EmptyAudio", "header_only.wav": "EmptyAudio",
        "truncated_header.wav": "TruncatedAudio", "truncated_data.wav": "TruncatedAudio",
        "random_bytes.wav": "NotAudio", "text.mp3": "NotAudio",
        "video_only.mkv": "UnsupportedAudio",
    }
    return {f"broken/{name}": {"kind": "broken", "error": err} for name, err in errors.items()}


def _write_video_only(path: Path) -> None:
    """A valid Matroska file holding one second of video and no audio stream."""
    import av

    with av.open(str(path), "w", format="matroska", options=_BITEXACT) as container:
        stream = container.add_stream("mpeg4", rate=Fraction(5))
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            image = np.full((32, 32, 3), i * 40, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


if __name__ == "__main__":
    sys.exit(main())
