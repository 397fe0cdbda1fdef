"""``parapipe audio analyze | enroll | voices``: the speech application from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import parapipe as pp

from ..ray import add_backend_arguments

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``audio`` command group to the main parser's subparsers."""
    audio = sub.add_parser("audio", help="speech analysis: transcription, speaker, gender/age in parallel")
    cmds = audio.add_subparsers(dest="audio_command", required=True)

    analyze = cmds.add_parser("analyze", help="analyse audio files; one JSON line per file")
    analyze.add_argument("paths", nargs="+", help="audio files or directories (searched recursively)")
    analyze.add_argument("--out", help="JSON lines output (default: print to stdout)")
    analyze.add_argument("--voices", help="voice registry (SQLite) for speaker identification")
    analyze.add_argument("--model", help="whisper model: a name (tiny, small, large-v3, ...) or a local path")
    analyze.add_argument("--age-model", help="ONNX age/gender model (default: age is null)")
    analyze.add_argument("--language", help="spoken language code (default: detect)")
    analyze.add_argument("--num-speakers", type=int, help="speakers per file, when known (default: find)")
    analyze.add_argument("--min-speakers", type=int, default=1, help="at least this many speakers per file")
    analyze.add_argument("--max-speakers", type=int, help="at most this many speakers per file")
    analyze.add_argument("--journal", help="SQLite journal: rerunning the same command resumes")
    analyze.add_argument("--glob", default="*.*", help="file pattern inside directories (default: *.*)")
    analyze.add_argument("--plan", choices=["throughput", "latency", "auto"], default=None,
                         help="CPU plan (default: latency for one file, else throughput; auto measures)")  # fmt: skip
    analyze.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_backend_arguments(analyze)
    analyze.set_defaults(func=_analyze)

    enroll = cmds.add_parser("enroll", help="add recordings of a person to the voice registry")
    enroll.add_argument("name")
    enroll.add_argument("files", nargs="+")
    enroll.add_argument("--voices", required=True)
    enroll.set_defaults(func=_enroll)

    voices = cmds.add_parser("voices", help="list (or remove) the voices in a registry")
    voices.add_argument("--voices", required=True)
    voices.add_argument("--remove", metavar="LABEL", help="forget this voice")
    voices.add_argument("--rename", nargs=2, metavar=("LABEL", "NAME"), help="name a voice, e.g. unknown-2")
    voices.set_defaults(func=_voices)


def _analyze(args: argparse.Namespace) -> int:
    from ..runner import discover_items
    from .graph import analysis_graph

    paths = [path for _, path in discover_items(args.paths, args.glob)]
    if not paths:
        raise pp.ConfigError(f"no audio files found in {args.paths}")
    plan = args.plan or ("latency" if len(paths) == 1 else "throughput")
    graph = analysis_graph(args.model, args.voices, args.age_model, language=args.language,
                           plan=None if plan == "auto" else plan, num_speakers=args.num_speakers,
                           min_speakers=args.min_speakers, max_speakers=args.max_speakers)  # fmt: skip
    auto = plan == "auto"
    out = open(args.out, "a", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115 - closed below
    failed = 0
    try:
        with pp.Engine(graph, cpus="auto" if auto else None, warmup=paths[:2] if auto else None) as engine:
            meter = _AudioMeter(len(paths), enabled=not args.no_progress and args.out is not None)
            outcomes = engine.map(paths, journal=args.journal, key=paths, return_exceptions=True)
            for path, outcome in zip(paths, outcomes, strict=True):
                record = _record(path, outcome)
                failed += record["error"] is not None
                out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                out.flush()
                meter.update(record.get("duration") or 0.0)
            meter.close()
    finally:
        if out is not sys.stdout:
            out.close()
    return 1 if failed else 0


def _record(path: str, outcome: Any) -> dict[str, Any]:
    if isinstance(outcome, pp.ItemError):
        return {"file": path, "error": outcome.to_dict()}
    return {**outcome, "file": path}


class _AudioMeter:
    """A progress bar counting files, with audio seconds processed per wall second."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._bar = None
        self._audio = 0.0
        self._start = time.perf_counter()
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="file", desc="analyze")

    def update(self, seconds: float) -> None:
        self._audio += seconds
        if self._bar is not None:
            rate = self._audio / max(1e-9, time.perf_counter() - self._start)
            self._bar.set_postfix_str(f"{rate:.1f} audio-s/s", refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _enroll(args: argparse.Namespace) -> int:
    from .voices import VoiceRegistry

    with VoiceRegistry(args.voices) as registry:
        voice = registry.enroll(args.name, *args.files)
    print(f"enrolled {voice.label!r}: {voice.count} recording(s) in {args.voices}")
    return 0


def _voices(args: argparse.Namespace) -> int:
    from .voices import VoiceRegistry

    if not os.path.isfile(args.voices):  # a reading command never creates the file it reads
        print(
            f"parapipe: voice registry {args.voices!r} does not exist; registries are made by "
            "`parapipe audio enroll --voices FILE NAME RECORDING...`, so check the path",
            file=sys.stderr,
        )
        return 2
    with VoiceRegistry(args.voices) as registry:
        if args.remove:
            if not registry.remove(args.remove):
                print(f"no voice labelled {args.remove!r}", file=sys.stderr)
                return 1
            print(f"removed {args.remove!r}")
        if args.rename:
            registry.rename(*args.rename)
            print(f"renamed {args.rename[0]!r} to {args.rename[1]!r}")
        for voice in registry.list():
            kind = "enrolled" if voice.enrolled else "unknown"
            print(f"{voice.label:20s} {kind:9s} {voice.count} sample(s)")
    return 0
