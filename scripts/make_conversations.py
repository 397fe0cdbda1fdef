"""Make conversations with known turns for the diarization tests and benchmarks/quality.py.

    python scripts/make_conversations.py OUT_DIR [--real DIR] [--only NAME ...]

Two sources, each conversation a 16 kHz WAV with a reference RTTM beside it:

* **generated**: espeak-ng voices of scripts/make_corpus.py (2-4 per conversation) taking
  turns of 1-8 s with gaps of 0-0.2 s, so most changes of speaker have no pause a VAD
  could find; ``overlap_*`` conversations start some turns 0.2-0.5 s before the previous
  one ends (summed), and ``monologue_60s`` is one voice for a minute. Deterministic.
* **real**: recordings from Debian's ``pocketsphinx-testdata`` (``--real``, default
  /usr/share/pocketsphinx/test/data): five LibriVox clips of one male reader (Sense and
  Sensibility), five short clips of another man reading playing cards, and one of a third
  man reading numbers. Each clip is trimmed to its speech and clips of different speakers
  are concatenated with gaps of 0-0.2 s. Skipped, with a note, when the package is missing.

OUT_DIR/conversations.json lists each conversation's turns ``{start, end, speaker, gender,
text}`` (reference times are where the speech is, trimmed of leading and trailing
silence) and the real single clips with their transcripts, for WER.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpus import ENROLL_SENTENCES, SPEAKERS, TEST_SENTENCES, _Synth

RATE = 16_000
REAL_DIR = Path("/usr/share/pocketsphinx/test/data")

SHORT = ["Yes, of course.", "I see.", "Really? Why?", "Sure, go on.", "No, not at all.",
         "Right, that makes sense.", "Okay, thank you.", "What time is it?"]
LONG = TEST_SENTENCES + ENROLL_SENTENCES

# name: (voices, number of turns, overlap), voices from make_corpus.SPEAKERS.
GENERATED: dict[str, tuple[tuple[str, ...], int, bool]] = {
    "two_mf": (("alan", "carol"), 10, False),
    "two_mm": (("bruce", "edgar"), 10, False),
    "two_ff": (("diana", "fiona"), 10, False),
    "three": (("alan", "diana", "edgar"), 12, False),
    "three_b": (("carol", "bruce", "fiona"), 12, False),
    "four": (("alan", "carol", "bruce", "fiona"), 14, False),
    "overlap_two": (("edgar", "diana"), 10, True),
    "overlap_three": (("bruce", "carol", "alan"), 12, True),
}
MONOLOGUE = ("monologue_60s", "bruce", 60.0)

# Real speakers: clip names under --real, with their transcripts (Debian's own files).
REAL_SPEAKERS = {
    "reader": ("librivox", ["sense_and_sensibility_01_austen_64kb-0870", "sense_and_sensibility_01_austen_64kb-0880",
                            "sense_and_sensibility_01_austen_64kb-0890", "sense_and_sensibility_01_austen_64kb-0920",
                            "sense_and_sensibility_01_austen_64kb-0930"]),
    "cards": ("cards", ["001", "002", "003", "004", "005"]),
    "numbers": (".", ["numbers"]),
}
REAL_CONVERSATIONS = {
    "real_two_a": [("reader", 0), ("cards", 0), ("reader", 1), ("cards", 4), ("reader", 2), ("cards", 1)],
    "real_two_b": [("cards", 2), ("reader", 3), ("cards", 3), ("reader", 4), ("cards", 4), ("reader", 0)],
    "real_three": [("reader", 1), ("numbers", 0), ("cards", 0), ("reader", 4), ("cards", 1), ("numbers", 0)],
}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2 when a tool is missing)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output directory (created; files replaced)")
    parser.add_argument("--real", type=Path, default=REAL_DIR, help="pocketsphinx-testdata's data directory")
    parser.add_argument("--only", nargs="*", help="make only these conversations")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        print(f"make_conversations: missing {', '.join(missing)} (apt-get install espeak-ng sox)", file=sys.stderr)
        return 2
    labels = build(args.out, args.real, set(args.only) if args.only else None)
    print(f"wrote {len(labels['conversations'])} conversations to {args.out}")
    return 0


def build(out: Path, real: Path = REAL_DIR, only: set[str] | None = None) -> dict[str, Any]:
    """Write the conversations under ``out`` and return the labels also saved there."""
    out.mkdir(parents=True, exist_ok=True)
    conversations: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        speak = _Speaker(Path(tmp))
        for name, (voices, count, overlap) in GENERATED.items():
            if only is None or name in only:
                conversations[name] = _generated(out, name, speak, voices, count, overlap)
        if only is None or MONOLOGUE[0] in only:
            conversations[MONOLOGUE[0]] = _monologue(out, speak)
    clips: list[dict[str, Any]] = []
    if (real / "librivox").is_dir():
        clips = _real_clips(real)
        for name, script in REAL_CONVERSATIONS.items():
            if only is None or name in only:
                conversations[name] = _write(out, name, "real", [(_clip(clips, s, i), s) for s, i in script],
                                             gaps=random.Random(name))
    else:
        print(f"make_conversations: {real} not found, no real conversations "
              "(apt-get install pocketsphinx-testdata)", file=sys.stderr)
    labels = {"sample_rate": RATE, "conversations": conversations,
              "real_clips": [{k: v for k, v in c.items() if k != "samples"} for c in clips]}
    (out / "conversations.json").write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n")
    return labels


class _Speaker:
    """espeak-ng phrases as int16 arrays trimmed to their speech, each synthesised once."""

    def __init__(self, tmp: Path) -> None:
        self.synth = _Synth(tmp)
        self.tmp = tmp
        self.cache: dict[tuple[str, str], np.ndarray] = {}

    def say(self, speaker: str, text: str) -> np.ndarray:
        if (speaker, text) not in self.cache:
            samples = self.synth.say(SPEAKERS[speaker], text, self.tmp / "phrase.wav")
            self.cache[speaker, text] = _trim(samples)
        return self.cache[speaker, text]


def _generated(out: Path, name: str, speak: _Speaker, voices: tuple[str, ...], count: int,
               overlap: bool) -> dict[str, Any]:
    """Turns by voices in a shuffled round robin, of 1-8 s each."""
    rng = random.Random(name)
    pieces: list[tuple[dict[str, Any], str]] = []
    previous = None
    for _ in range(count):
        speaker = rng.choice([v for v in voices if v != previous])
        previous = speaker
        text = _phrase(rng)
        samples = speak.say(speaker, text)
        while not RATE <= len(samples) <= 8 * RATE:  # turns of 1-8 s
            text = rng.choice(LONG)
            samples = speak.say(speaker, text)
        pieces.append(({"samples": samples, "text": text, "gender": SPEAKERS[speaker].gender}, speaker))
    if not {s for _, s in pieces} >= set(voices):  # every voice speaks at least once
        raise RuntimeError(f"{name}: some voice never speaks; change the turn count")
    return _write(out, name, "overlap" if overlap else "generated", pieces, gaps=rng, overlap=overlap)


def _phrase(rng: random.Random) -> str:
    """A short answer (about 1-2 s), one sentence (2-4 s) or two (5-8 s)."""
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(SHORT)
    if kind < 0.75:
        return rng.choice(LONG)
    return f"{rng.choice(LONG)} {rng.choice(LONG)}"


def _monologue(out: Path, speak: _Speaker) -> dict[str, Any]:
    """One voice reading sentence after sentence, with natural pauses, for a minute."""
    name, speaker, seconds = MONOLOGUE
    pieces, total, k = [], 0.0, 0
    while total < seconds:
        text = LONG[k % len(LONG)]
        samples = speak.say(speaker, text)
        pieces.append(({"samples": samples, "text": text, "gender": SPEAKERS[speaker].gender}, speaker))
        total += len(samples) / RATE + 0.4
        k += 1
    return _write(out, name, "monologue", pieces, gaps=None)


def _write(out: Path, name: str, kind: str, pieces: list[tuple[dict[str, Any], str]],
           gaps: random.Random | None, overlap: bool = False) -> dict[str, Any]:
    """Concatenate the pieces (summing where they overlap); write the WAV and its RTTM."""
    import soundfile as sf

    starts, t = [], 0
    for i, (piece, _) in enumerate(pieces):
        if i:
            if gaps is None:
                t += int(0.4 * RATE)
            elif overlap and i % 3 == 1:
                t -= int(gaps.uniform(0.2, 0.5) * RATE)
            else:
                t += int(gaps.uniform(0.0, 0.2) * RATE)
        starts.append(t)
        t += len(piece["samples"])
    mix = np.zeros(t, np.int32)
    turns = []
    for start, (piece, speaker) in zip(starts, pieces, strict=True):
        mix[start : start + len(piece["samples"])] += piece["samples"]
        turns.append({"start": round(start / RATE, 3), "end": round((start + len(piece["samples"])) / RATE, 3),
                      "speaker": speaker, "gender": piece["gender"], "text": piece["text"]})
    sf.write(out / f"{name}.wav", np.clip(mix, -32768, 32767).astype(np.int16), RATE, subtype="PCM_16")
    rttm = "".join(f"SPEAKER {name} 1 {u['start']:.3f} {u['end'] - u['start']:.3f} <NA> <NA> {u['speaker']} <NA> <NA>\n"
                   for u in turns)
    (out / f"{name}.rttm").write_text(rttm)
    return {"kind": kind, "file": f"{name}.wav", "rttm": f"{name}.rttm", "turns": turns,
            "speakers": sorted({u["speaker"] for u in turns}),
            "enrolled": sorted({u["speaker"] for u in turns if u["speaker"] in SPEAKERS
                                and SPEAKERS[u["speaker"]].enrolled})}


def _real_clips(real: Path) -> list[dict[str, Any]]:
    """Every real clip, with its transcript from the package's transcription files."""
    import soundfile as sf

    texts: dict[str, str] = {}
    for path in (real / "librivox" / "transcription", real / "cards" / "cards.transcription"):
        for line in path.read_text().splitlines():
            words, _, key = line.rpartition("(")
            texts[key.strip(" )")] = " ".join(w for w in words.split() if w not in ("<s>", "</s>"))
    texts["numbers"] = ""  # no transcript ships for it: used for voices, not for WER
    clips = []
    for speaker, (folder, keys) in REAL_SPEAKERS.items():
        for key in keys:
            wav = real / folder / f"{key}.wav"
            if wav.exists():
                samples, _ = sf.read(wav, dtype="int16")
            else:
                samples = np.fromfile(real / folder / f"{key}.raw", dtype="<i2")
            clips.append({"speaker": speaker, "key": key, "gender": "male", "text": texts[key],
                          "path": str(wav if wav.exists() else real / folder / f"{key}.raw"),
                          "samples": _trim(samples)})
    return clips


def _clip(clips: list[dict[str, Any]], speaker: str, index: int) -> dict[str, Any]:
    return [c for c in clips if c["speaker"] == speaker][index]


def _trim(samples: np.ndarray, frame: int = 160) -> np.ndarray:
    """Cut leading and trailing frames quieter than 35 dB below the loudest 10 ms frame."""
    n = len(samples) // frame
    rms = np.sqrt((samples[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-35 / 20))
    if len(loud) == 0:
        return samples
    return samples[loud[0] * frame : (loud[-1] + 1) * frame]


if __name__ == "__main__":
    sys.exit(main())
