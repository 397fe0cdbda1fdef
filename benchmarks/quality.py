"""How good are the speech results? Diarization, transcription, gender and naming on known answers.

Corpora (built afresh in a temporary directory by scripts/make_conversations.py):

* generated: espeak-ng conversations of 2-4 voices, turns of 1-8 s, gaps of 0-0.2 s;
* overlap: the same with some turns starting 0.2-0.5 s before the previous one ends;
* monologue: one voice for 60 s (must stay one speaker);
* real: Debian pocketsphinx-testdata clips of three men (a LibriVox reader, a card reader,
  a number reader) concatenated into conversations with 0-0.2 s gaps;
* librivox: the five real LibriVox clips on their own, for WER and gender.

Metrics, per corpus:

* DER: (missed + false alarm + confusion) / reference speech, with a ±0.25 s collar around
  every reference boundary left out (NIST md-eval's convention; pyannote's ``collar=0.5``)
  and overlapped reference speech scored (a single-speaker answer misses the second voice).
  Speakers are mapped one-to-one to maximise matched time (Hungarian). Frames of 10 ms.
* WER of the merged text against the reference text (jiwer, lower case, no punctuation).
* gender: share of reference turns whose best-overlapping output turn has the right gender.
* enrolled: share of reference turns by an enrolled voice whose overlapping output turn
  carries that person's name (registry built from scripts/make_corpus.py's enrolment clips).
* speakers: speakers found / true, summed over the corpus's files.
* CPU: the speaker branch's CPU seconds as a share of the transcription branch's, with malloc
  set as in parapipe's workers (`parapipe/worker/malloc.py`), where both branches run.

Usage: python benchmarks/quality.py [--only NAME ...]. Explained in docs/benchmarks/quality.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "src"))

from _common import Figure  # noqa: E402  (the tests import this module by path)

FRAME = 0.01
COLLAR = 0.25

Turn = tuple[float, float, str]


def der(reference: Sequence[Turn], hypothesis: Sequence[Turn], collar: float = COLLAR) -> dict[str, float]:
    """Diarization error rate of ``hypothesis`` against ``reference`` (see the module docstring).

    Turns are ``(start, end, speaker)`` in seconds. Returns ``der``, ``missed``,
    ``false_alarm``, ``confusion`` (each a share of scored reference speech) and ``scored``
    (reference speech seconds after the collar).
    """
    from scipy.optimize import linear_sum_assignment

    end = max([t[1] for t in [*reference, *hypothesis]], default=0.0)
    n = int(np.ceil(end / FRAME)) + 1
    ref_names = sorted({t[2] for t in reference})
    hyp_names = sorted({t[2] for t in hypothesis})
    ref = _activity(reference, ref_names, n)
    hyp = _activity(hypothesis, hyp_names, n)
    keep = np.ones(n, bool)
    for start, stop, _ in reference:
        for edge in (start, stop):
            keep[max(0, round((edge - collar) / FRAME)) : round((edge + collar) / FRAME)] = False
    ref, hyp = ref[:, keep], hyp[:, keep]
    overlap = ref.astype(np.int64) @ hyp.T.astype(np.int64)  # ref x hyp frames spoken by both
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    matched = int(overlap[rows, cols].sum()) if len(rows) else 0
    n_ref, n_hyp = ref.sum(axis=0), hyp.sum(axis=0)
    total = int(n_ref.sum())
    missed = int(np.maximum(n_ref - n_hyp, 0).sum())
    false_alarm = int(np.maximum(n_hyp - n_ref, 0).sum())
    confusion = int(np.minimum(n_ref, n_hyp).sum()) - matched
    share = 1.0 / max(total, 1)
    return {
        "der": (missed + false_alarm + confusion) * share,
        "missed": missed * share,
        "false_alarm": false_alarm * share,
        "confusion": confusion * share,
        "scored": total * FRAME,
    }


def _activity(turns: Sequence[Turn], names: list[str], n: int) -> np.ndarray:
    """Speakers x frames, True where the speaker talks."""
    out = np.zeros((len(names), n), bool)
    for start, stop, name in turns:
        out[names.index(name), round(start / FRAME) : round(stop / FRAME)] = True
    return out


def read_rttm(path: Path) -> list[Turn]:
    """``SPEAKER file 1 start duration <NA> <NA> speaker <NA> <NA>`` lines as turns."""
    turns = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.append((start, start + duration, fields[7]))
    return turns


def normalise(text: str) -> str:
    """Lower case, digits and letters only: what WER compares."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def _best_overlap(turn: dict[str, Any], found: list[dict[str, Any]]) -> dict[str, Any] | None:
    def overlap(other: dict[str, Any]) -> float:
        return min(turn["end"], other["end"]) - max(turn["start"], other["start"])

    best = max(found, key=overlap, default=None)
    return best if best is not None and overlap(best) > 0 else None


class Analyser:
    """The speech stages in this process, one thread each, timed in CPU seconds per branch."""

    def __init__(self, voices: Path) -> None:
        import torch

        from parapipe.audio import Decode, GenderAge, Segment, Speaker, Transcribe

        torch.set_num_threads(1)
        self.decode, self.vad = Decode(), Segment()
        self.branches = {"transcribe": Transcribe(), "speaker": Speaker(voices), "gender_age": GenderAge()}
        for stage in (self.vad, *self.branches.values()):
            stage.setup()
        torch.set_num_threads(1)
        self.cpu = dict.fromkeys(self.branches, 0.0)

    def __call__(self, path: Path) -> dict[str, Any]:
        from parapipe.audio import merge_result

        clip = self.vad.process(self.decode.process(str(path)))
        results = {}
        for name, stage in self.branches.items():
            start = time.process_time()
            results[name] = stage.process(clip)
            self.cpu[name] += time.process_time() - start
        return merge_result(results)


def _registry(tmp: Path) -> Path:
    """A voice registry with make_corpus.py's enrolled speakers, calibrated."""
    from parapipe.audio import VoiceRegistry
    from parapipe.audio.embedding import VoiceEmbedder

    corpus = tmp / "corpus"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_corpus.py"), str(corpus)], check=True, capture_output=True
    )
    labels = json.loads((corpus / "labels.json").read_text())["files"]
    by_speaker: dict[str, list[Path]] = {}
    for rel, label in labels.items():
        if label["kind"] == "enroll":
            by_speaker.setdefault(label["speaker"], []).append(corpus / rel)
    path = tmp / "voices.db"
    embedder = VoiceEmbedder()
    with VoiceRegistry(path) as registry:
        for name, files in by_speaker.items():
            registry.enroll(name, *files, embedder=embedder)
        registry.calibrate()
    return path


def score(corpus: str, files: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[Any]:
    """One table row from ``(label, merged result)`` pairs of one corpus."""
    import jiwer

    errors = scored = 0.0
    gender_ok = gender_all = enrolled_ok = enrolled_all = found = true = exact = 0
    refs, hyps = [], []
    for label, result in files:
        reference = label["turns"]
        found_turns = result["turns"]
        if len(reference) > 1 or label.get("kind") != "clip":
            measured = der(
                [(t["start"], t["end"], t["speaker"]) for t in reference],
                [(t["start"], t["end"], t["speaker"] or "?") for t in found_turns],
            )
            errors += measured["der"] * measured["scored"]
            scored += measured["scored"]
            found += len(result["speakers"])
            true += len(label["speakers"])
            exact += len(result["speakers"]) == len(label["speakers"])
        if all(t["text"] for t in reference):
            refs.append(normalise(" ".join(t["text"] for t in reference)))
            hyps.append(normalise(result["text"] or ""))
        for turn in reference:
            match = _best_overlap(turn, found_turns)
            gender_all += 1
            gender_ok += match is not None and match["gender"] == turn["gender"]
            if turn["speaker"] in label.get("enrolled", []):
                enrolled_all += 1
                enrolled_ok += match is not None and match["speaker"] == turn["speaker"]
    return [
        corpus,
        len(files),
        f"{100 * errors / scored:.1f} %" if scored else "-",
        f"{100 * jiwer.wer(refs, hyps):.1f} %" if refs else "-",
        f"{100 * gender_ok / gender_all:.1f} % of {gender_all}" if gender_all else "-",
        f"{100 * enrolled_ok / enrolled_all:.1f} % of {enrolled_all}" if enrolled_all else "-",
        f"{found}/{true} ({exact}/{len(files)} exact)" if true else "-",
    ]


FIGURE = Figure("speech quality per corpus: error rates in % (lower is better)", ("corpus",),
                 ("DER (±0.25 s collar)", "WER"))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from _common import machine_line, parse_args, report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="only these conversations (scripts/make_conversations.py names)")
    args = parse_args(parser, FIGURE, argv)
    if args is None:
        return 0
    from parapipe.worker.malloc import keep_freed_memory

    keep_freed_memory()  # malloc as in parapipe's workers, before any model: no branch's CPU goes to page faults
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        make = [sys.executable, str(REPO / "scripts" / "make_conversations.py"), str(tmp / "conv")]
        subprocess.run(make + (["--only", *args.only] if args.only else []), check=True, capture_output=True)
        labels = json.loads((tmp / "conv" / "conversations.json").read_text())
        analyse = Analyser(_registry(tmp))
        by_corpus: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        audio = 0.0
        for conversation in labels["conversations"].values():
            result = analyse(tmp / "conv" / conversation["file"])
            audio += result["duration"]
            by_corpus.setdefault(conversation["kind"], []).append((conversation, result))
        for clip in labels["real_clips"]:
            if clip["text"] and clip["speaker"] == "reader":
                result = analyse(Path(clip["path"]))
                audio += result["duration"]
                turn = {"start": 0.0, "end": result["duration"], **{k: clip[k] for k in ("speaker", "gender", "text")}}
                by_corpus.setdefault("librivox", []).append(
                    ({"kind": "clip", "turns": [turn], "speakers": [clip["speaker"]]}, result)
                )
    order = ["generated", "overlap", "monologue", "real", "librivox"]
    rows = [score(corpus, by_corpus[corpus]) for corpus in order if corpus in by_corpus]
    cpu = analyse.cpu
    headers = ["corpus", "files", "DER (±0.25 s collar)", "WER", "gender per turn", "enrolled named",
               "speakers found/true"]  # fmt: skip
    report(
        FIGURE,
        headers,
        rows,
        args.plot,
        title="Speech quality on known answers",
        notes=[
            machine_line(),
            f"{audio:.0f} s of audio; CPU seconds (one thread per model): transcribe {cpu['transcribe']:.1f}, "
            f"speaker (diarization + naming) {cpu['speaker']:.1f} = "
            f"{100 * cpu['speaker'] / cpu['transcribe']:.1f} % of transcribe, gender {cpu['gender_age']:.1f}",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
